/**
 * The whole Redis key layout of provline's own state, owned here and only here (BullMQ keeps
 * its queues under `<p>-q:`). Everything lives under one prefix, so several provline
 * deployments can share a Redis.
 *
 *   <p>:dev:<serial>              hash   one device: state, batch, timestamps per state, results
 *   <p>:hist:<serial>             list   the device's records in earlier batches (JSON, newest first)
 *   <p>:visits:<serial>           list   the station's log of the device's last visits (JSON, newest first)
 *   <p>:certs                     hash   certificateId -> serial (written with the transition)
 *   <p>:batch:<id>                hash   batch metadata (profile, created, total, endpoint, …)
 *   <p>:batch:<id>:plan           string the batch plan's header (JSON), written once
 *   <p>:batch:<id>:plan:devices   list   the plan's devices, one JSON page of PLAN_PAGE each
 *   <p>:batch:<id>:serials        list   serials in plan order (for reports)
 *   <p>:batch:<id>:counts         hash   state -> number of devices in that state (+ progressAt)
 *   <p>:batch:<id>:failures       hash   failure code -> count
 *   <p>:batch:<id>:in:<state>     set    the batch's serials in that state (kept by the scripts)
 *   <p>:batch:<id>:chunk:<n>      hash   one registration chunk: serials, input key, task id
 *   <p>:batch:<id>:chunks         list   chunk numbers in the order they were claimed
 *   <p>:batch:<id>:chunkseq       string counter for chunk numbers
 *   <p>:batches                   zset   batch ids by creation time
 *   <p>:active                    set    batches whose registration stage has not finished
 *   <p>:aws:bulk-slot             string the account's one bulk-registration slot: "<fence>:<owner>"
 *   <p>:aws:bulk-fence            string fencing counter for that slot
 */
export class JournalKeys {
  constructor(readonly prefix = 'provline') {}

  device(serial: string): string {
    return `${this.prefix}:dev:${serial}`;
  }
  /** Prefix of the history lists (a script appends the serial). */
  historyPrefix(): string {
    return `${this.prefix}:hist:`;
  }
  history(serial: string): string {
    return `${this.historyPrefix()}${serial}`;
  }
  visits(serial: string): string {
    return `${this.prefix}:visits:${serial}`;
  }
  certificates(): string {
    return `${this.prefix}:certs`;
  }
  batch(id: string): string {
    return `${this.prefix}:batch:${id}`;
  }
  /** Prefix of every batch key (scripts derive another batch's keys from it). */
  batchRoot(): string {
    return `${this.prefix}:batch:`;
  }
  plan(id: string): string {
    return `${this.prefix}:batch:${id}:plan`;
  }
  planDevices(id: string): string {
    return `${this.prefix}:batch:${id}:plan:devices`;
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
  /** Prefix of the per-state sets of a batch; append the state name. */
  inStatePrefix(id: string): string {
    return `${this.prefix}:batch:${id}:in:`;
  }
  inState(id: string, state: string): string {
    return `${this.inStatePrefix(id)}${state}`;
  }
  chunk(id: string, n: number | string): string {
    return `${this.prefix}:batch:${id}:chunk:${n}`;
  }
  chunks(id: string): string {
    return `${this.prefix}:batch:${id}:chunks`;
  }
  chunkSeq(id: string): string {
    return `${this.prefix}:batch:${id}:chunkseq`;
  }
  batches(): string {
    return `${this.prefix}:batches`;
  }
  active(): string {
    return `${this.prefix}:active`;
  }
  bulkSlot(): string {
    return `${this.prefix}:aws:bulk-slot`;
  }
  bulkFence(): string {
    return `${this.prefix}:aws:bulk-fence`;
  }
}
