/**
 * The session pool: the one place that owns PKCS#11 sessions. Every operation runs inside
 * `withSession`, which lends one session exclusively (PKCS#11 operation state such as
 * C_SignInit → C_Sign is per session) and takes it back in `finally`.
 *
 * Sessions open lazily up to `size` (config `hsm.sessions`, capped by the token's
 * ulMaxRwSessionCount). The first session logs in and stays open while the pool lives, which
 * keeps the application logged in. A session the token has dropped is discarded, not reused.
 */
import { ProvlineError } from '../core/index.js';
import type { Session } from './session.js';
import type { Token } from './token.js';

const LOST_CODES = new Set(['HSM_SESSION_LOST', 'HSM_TOKEN_NOT_PRESENT']);

export class SessionPool {
  private readonly idle: Session[] = [];
  private readonly all = new Set<Session>();
  private readonly waiters: Array<{ resolve: (s: Session) => void; reject: (e: Error) => void }> = [];
  private closed = false;
  readonly size: number;

  constructor(
    private readonly token: Token,
    wanted: number,
    private readonly login: (s: Session) => void,
  ) {
    const max = token.info().maxRwSessions;
    this.size = Math.max(1, max === undefined ? wanted : Math.min(wanted, max));
    // Open and log in one session now, so a wrong PIN fails at open, not at the first device.
    const first = this.openOne();
    this.idle.push(first);
  }

  get openSessions(): number {
    return this.all.size;
  }

  async withSession<T>(fn: (s: Session) => T | Promise<T>): Promise<T> {
    const session = await this.acquire();
    let lost = false;
    try {
      return await fn(session);
    } catch (e) {
      lost = e instanceof ProvlineError && LOST_CODES.has(e.code);
      throw e;
    } finally {
      this.release(session, lost);
    }
  }

  /** Closes every session; callers still waiting get HSM_CLOSED. */
  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0))
      w.reject(new ProvlineError('HSM_CLOSED', 'the HSM connection was closed'));
    // Close the login session last so the others never run logged out.
    for (const s of [...this.all].reverse()) s.close();
    this.all.clear();
    this.idle.length = 0;
  }

  /** Opens and logs in the first session now, so that open-time problems surface at open. */
  prime(): void {
    if (this.all.size === 0) this.idle.push(this.openOne());
  }

  private openOne(): Session {
    const s = this.token.openSession();
    if (this.all.size === 0) {
      try {
        this.login(s);
      } catch (e) {
        s.close();
        throw e;
      }
    }
    this.all.add(s);
    return s;
  }

  private acquire(): Promise<Session> {
    if (this.closed) return Promise.reject(new ProvlineError('HSM_CLOSED', 'the HSM connection was closed'));
    const s = this.idle.pop();
    if (s) return Promise.resolve(s);
    if (this.all.size < this.size) {
      try {
        return Promise.resolve(this.openOne());
      } catch (e) {
        return Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  private release(s: Session, lost: boolean): void {
    if (lost || this.closed) {
      this.all.delete(s);
      try {
        s.close();
      } catch {
        // already gone
      }
      if (this.closed) return;
      // Replace it for a waiter, if any (a new session; login state is per application).
      const w = this.waiters.shift();
      if (w) {
        try {
          w.resolve(this.openOne());
        } catch (e) {
          w.reject(e instanceof Error ? e : new Error(String(e)));
        }
      }
      return;
    }
    const w = this.waiters.shift();
    if (w) w.resolve(s);
    else this.idle.push(s);
  }
}
