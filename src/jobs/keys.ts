/**
 * The whole Redis key layout of the journal, owned here and only here. Everything lives
 * under one prefix, so several provline deployments can share a Redis.
 *
 *   <p>:dev:<serial>            hash   one device: state, batch, timestamps per state, results
 *   <p>:batch:<id>              hash   batch metadata (profile, plan version, created, total)
 *   <p>:batch:<id>:plan         string the batch plan (JSON), written once
 *   <p>:batch:<id>:serials      list   serials in plan order (for reports)
 *   <p>:batch:<id>:counts       hash   state -> number of devices in that state
 *   <p>:batch:<id>:failures     hash   failure code -> count
 *   <p>:batches                 zset   batch ids by creation time
 */
export class JournalKeys {
  constructor(readonly prefix = 'provline') {}

  device(serial: string): string {
    return `${this.prefix}:dev:${serial}`;
  }
  batch(id: string): string {
    return `${this.prefix}:batch:${id}`;
  }
  plan(id: string): string {
    return `${this.prefix}:batch:${id}:plan`;
  }
  serials(id: string): string {
    return `${this.prefix}:batch:${id}:serials`;
  }
  counts(id: string): string {
    return `${this.prefix}:batch:${id}:counts`;
  }
  failures(id: string): string {
    return `${this.prefix}:batch:${id}:failures`;
  }
  batches(): string {
    return `${this.prefix}:batches`;
  }
}
