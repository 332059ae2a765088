/**
 * A PKCS#11 session. Object searches always end in C_FindObjectsFinal (try/finally), so a
 * failed search never leaves the session stuck in CKR_OPERATION_ACTIVE.
 */
import pkcs11js from 'pkcs11js';
import { hasCkr, hsmError } from './errors.js';

export class Session {
  private open = true;

  constructor(
    readonly p: pkcs11js.PKCS11,
    readonly handle: Buffer,
  ) {}

  get isOpen(): boolean {
    return this.open;
  }

  /**
   * Logs the user in. Login state belongs to the application, not the session: one login serves
   * every session, and "already logged in" (another part of this process did it) is success.
   */
  login(pin: string): void {
    try {
      this.p.C_Login(this.handle, pkcs11js.CKU_USER, pin);
    } catch (e) {
      if (hasCkr(e, pkcs11js.CKR_USER_ALREADY_LOGGED_IN)) return;
      throw hsmError(e, 'logging in to the HSM token');
    }
  }

  /** Handles of objects matching `template` (at most `max`). */
  find(template: pkcs11js.Template, max = 16): Buffer[] {
    try {
      this.p.C_FindObjectsInit(this.handle, template);
    } catch (e) {
      throw hsmError(e, 'searching HSM objects');
    }
    try {
      return this.p.C_FindObjects(this.handle, max);
    } catch (e) {
      throw hsmError(e, 'searching HSM objects');
    } finally {
      this.p.C_FindObjectsFinal(this.handle);
    }
  }

  attributes(object: Buffer, types: number[], operation = 'reading key attributes'): Map<number, Buffer> {
    try {
      const out = this.p.C_GetAttributeValue(
        this.handle,
        object,
        types.map((type) => ({ type })),
      );
      return new Map(out.map((a) => [a.type, a.value]));
    } catch (e) {
      throw hsmError(e, operation);
    }
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    try {
      this.p.C_CloseSession(this.handle);
    } catch (e) {
      // A session the module already dropped (token removed, finalize) is closed anyway.
      if (!hasCkr(e, pkcs11js.CKR_SESSION_HANDLE_INVALID) && !hasCkr(e, pkcs11js.CKR_SESSION_CLOSED))
        throw hsmError(e, 'closing an HSM session');
    }
  }
}
