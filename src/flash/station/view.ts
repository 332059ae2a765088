/**
 * How a station shows itself: JSON lines (one event per line, for machines and for logs when
 * stdout is not a terminal), or a live table per port on a terminal, with each device's result
 * also printed as a permanent line above the table so nothing scrolls away unseen.
 */
import { emptySummary, type JournalStatus, type StationEvent, type StationSummary } from './events.js';

export interface StationView {
  handle(e: StationEvent): void;
  close(): void;
}

/** One JSON object per line; progress at most every `progressMs` per port (and at 100 %). */
export class JsonLinesView implements StationView {
  private readonly lastProgress = new Map<string, number>();

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly options: { progressMs?: number; now?: () => number } = {},
  ) {}

  handle(e: StationEvent): void {
    const now = (this.options.now ?? Date.now)();
    if (e.event === 'progress' && e.bytesSent < e.bytesTotal) {
      const last = this.lastProgress.get(e.port) ?? 0;
      if (now - last < (this.options.progressMs ?? 250)) return;
      this.lastProgress.set(e.port, now);
    }
    this.out.write(`${JSON.stringify({ at: new Date(now).toISOString(), ...e })}\n`);
  }

  close(): void {}
}

interface Row {
  device: string;
  step: string;
  progress: string;
  result: string;
}

const ESC = '\x1b[';
const COLOR: Record<string, string> = {
  verified: '32',
  already: '32',
  failed: '31',
  refused: '33',
  abandoned: '33',
};

/** A live table, redrawn in place at most every `redrawMs`. */
export class TtyView implements StationView {
  private readonly rows = new Map<string, Row>();
  private summary: StationSummary = emptySummary();
  private journal: JournalStatus = 'online';
  private title = '';
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly options: { redrawMs?: number; columns?: number } = {},
  ) {}

  handle(e: StationEvent): void {
    switch (e.event) {
      case 'station':
        this.title = `provline station ${e.stationId} · profile ${e.profile} (${e.driver})`;
        this.journal = e.journal;
        for (const p of e.ports) this.rows.set(p, { device: '—', step: 'opening', progress: '', result: '' });
        break;
      case 'port':
        this.row(e.port).step = e.status === 'waiting-for-port' ? 'no port yet' : e.status;
        if (e.status === 'error') this.log(`${e.port}: ${e.message ?? 'error'}`, '31');
        break;
      case 'device':
        Object.assign(this.row(e.port), { device: e.serial, progress: '', result: '' });
        break;
      case 'step': {
        const r = this.row(e.port);
        r.step = e.step;
        if (e.step === 'waiting') Object.assign(r, { device: '—', progress: '' });
        break;
      }
      case 'progress':
        this.row(e.port).progress = `${e.object} ${bar(e.bytesSent / Math.max(1, e.bytesTotal))}`;
        break;
      case 'result':
        this.row(e.port).result = e.connected ? 'connected' : e.outcome;
        this.row(e.port).progress = '';
        this.summary[e.outcome]++;
        if (e.connected) this.summary.connected++;
        this.log(e.message, COLOR[e.outcome]);
        if (e.hint && e.outcome !== 'verified' && e.outcome !== 'already') this.log(`  hint: ${e.hint}`);
        break;
      case 'left':
        this.row(e.port).result = '';
        break;
      case 'journal':
        this.journal = e.status;
        this.log(
          e.status === 'offline'
            ? `journal unreachable (${e.message ?? ''}): using the cache, results recorded locally`
            : `journal ${e.status}`,
          e.status === 'offline' ? '33' : undefined,
        );
        break;
      case 'summary':
        this.summary = { ...e };
        break;
    }
    this.schedule();
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.draw();
  }

  private row(port: string): Row {
    let r = this.rows.get(port);
    if (!r) this.rows.set(port, (r = { device: '—', step: '', progress: '', result: '' }));
    return r;
  }

  /** A permanent line above the table. */
  private log(text: string, color?: string): void {
    this.clear();
    this.out.write(`${color ? `${ESC}${color}m${text}${ESC}0m` : text}\n`);
    this.draw();
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.draw();
    }, this.options.redrawMs ?? 100);
  }

  private clear(): void {
    if (this.drawn) this.out.write(`${ESC}${this.drawn}A\r${ESC}J`);
    this.drawn = 0;
  }

  private draw(): void {
    const width = this.options.columns ?? 120;
    const ports = [...this.rows.keys()];
    const pw = Math.min(32, Math.max(4, ...ports.map((p) => p.length)));
    const line = (cells: string[], widths: number[]): string =>
      cells
        .map((c, i) => fit(c, widths[i] ?? 10))
        .join('  ')
        .slice(0, width);
    const widths = [pw, 18, 10, 26, 10];
    const s = this.summary;
    const lines = [
      this.title,
      line(['PORT', 'DEVICE', 'STEP', 'PROGRESS', 'RESULT'], widths),
      ...ports.map((p) => {
        const r = this.rows.get(p)!;
        return line([p, r.device, r.step, r.progress, r.result], widths);
      }),
      `verified ${s.verified + s.already} · connected ${s.connected} · failed ${s.failed} · refused ${s.refused} · abandoned ${s.abandoned}` +
        ` · journal ${this.journal}`,
    ];
    this.clear();
    this.out.write(lines.map((l) => `${ESC}2K${l}\n`).join(''));
    this.drawn = lines.length;
  }
}

function fit(s: string, w: number): string {
  return s.length > w ? `${s.slice(0, w - 1)}…` : s.padEnd(w);
}

function bar(fraction: number): string {
  const f = Math.max(0, Math.min(1, fraction));
  const filled = Math.round(f * 8);
  return `${'█'.repeat(filled)}${'░'.repeat(8 - filled)} ${Math.round(f * 100)}%`;
}
