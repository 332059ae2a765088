/** What every command gets: config, the resolved runtime, output helpers. Built lazily. */
import { loadConfig, type LoadedConfig } from '../config/index.js';
import { resolveRuntime, type HsmSettings, type Runtime, ensureLocalToken } from '../stack/index.js';
import { createLogger, type Logger } from '../core/index.js';
import { NO_ENTRIES, type Entries } from './entries.js';

export interface GlobalOptions {
  config?: string;
  home?: string;
}

export class CommandContext {
  private loadedConfig: LoadedConfig | undefined;
  private rt: Runtime | undefined;
  private log: Logger | undefined;

  constructor(
    private readonly globals: GlobalOptions,
    readonly out: NodeJS.WritableStream = process.stdout,
    readonly env: NodeJS.ProcessEnv = process.env,
    /** A configuration already made (`provline rehearse` on its throwaway stack). */
    preloaded?: LoadedConfig,
    /** The process entry points commands hand over to (workers/, passed in by workers/cli.ts). */
    readonly entries: Entries = NO_ENTRIES,
  ) {
    this.loadedConfig = preloaded;
  }

  get loaded(): LoadedConfig {
    if (!this.loadedConfig) {
      const env = this.globals.home ? { ...this.env, PROVLINE_HOME: this.globals.home } : this.env;
      this.loadedConfig = loadConfig({ file: this.globals.config, env });
    }
    return this.loadedConfig;
  }

  get runtime(): Runtime {
    this.rt ??= resolveRuntime(this.loaded, this.env);
    return this.rt;
  }

  /**
   * The HSM to use. On embedded defaults that is the local stack's SoftHSM token, created here
   * if `stack up` has not run yet, so HSM commands work on a fresh machine.
   */
  async hsmSettings(): Promise<HsmSettings> {
    const hsm = this.runtime.hsm;
    if (hsm.localToken) await ensureLocalToken(this.runtime.home);
    return hsm;
  }

  get logger(): Logger {
    this.log ??= createLogger(this.env.PROVLINE_LOG_LEVEL ?? 'warn');
    return this.log;
  }

  /** Prints data as one JSON document. */
  json(data: unknown): void {
    this.out.write(`${JSON.stringify(data, null, 2)}\n`);
  }

  print(text: string): void {
    this.out.write(text.endsWith('\n') ? text : `${text}\n`);
  }
}
