/*
 * The raw limit of a PKCS#11 token for provline's per-device work, with no provline code around
 * it. Per device, by work:
 *
 *   csr     (default) generate a key pair as session objects, read the public key, sign a
 *           32/48-byte hash (CKM_ECDSA) or a DigestInfo (CKM_RSA_PKCS) with the new key, wrap
 *           the private key with CKM_AES_KEY_WRAP_PAD under an AES-256 session KEK, destroy both
 *           objects (src/hsm/identity.ts: keygen + CSR + wrap);
 *   ca-key  the same calls, but the one signature is made by the CA's private key (the device
 *           certificate, src/hsm/ca.ts createSignedIdentity);
 *   ca-csr  one signature by the CA's private key (a certificate for a public key the device
 *           made itself, src/hsm/ca.ts signDeviceCertificate).
 *
 * The CA key: with a CA label, the CA's private key is the TOKEN object of that label, found
 * once with C_FindObjects, exactly the object provline signs with (`provline hsm bench` makes a
 * CA for the run and passes its label, so both sides sign with the same key on the same token;
 * SoftHSM checks a token object's file for changes on each use, which a session key would not
 * pay, so only the same kind of object is a fair limit). Without a label, a session key pair of
 * the key type is made once per run (a slightly faster key: a stricter limit). Same templates as
 * src/hsm/identity.ts. `provline hsm bench` compiles this at run time and compares.
 *
 *   raw <module.so> <token label> <file:PINFILE|env:VAR> <devices> <threads> <P-256|P-384|RSA-2048>
 *       [csr|ca-key|ca-csr [CA label]]
 *
 * Prints one JSON line naming the work. The PIN never appears in argv: only where to read it from.
 * Build: gcc -O2 raw.c -o raw -ldl -lpthread -I/usr/include/p11-kit-1
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;
static CK_SLOT_ID slot;
static int per_thread;
static int rsa;
enum work { CSR, CA_KEY, CA_CSR };
static enum work work = CSR;
static const char *work_name = "csr";
static CK_OBJECT_HANDLE ca_priv;
static CK_BYTE ec_params[16];
static CK_ULONG ec_params_len, sig_len, hash_len;
static pthread_barrier_t barrier;

#define CHECK(call)                                                              \
  do {                                                                           \
    CK_RV rv_ = (call);                                                          \
    if (rv_ != CKR_OK) {                                                         \
      fprintf(stderr, "raw: %s failed: 0x%lx\n", #call, (unsigned long)rv_);     \
      exit(2);                                                                   \
    }                                                                            \
  } while (0)

static void *worker(void *arg) {
  (void)arg;
  CK_SESSION_HANDLE s;
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
  CK_KEY_TYPE aes = CKK_AES;
  CK_ULONG kek_len = 32, bits = 2048;
  CK_BYTE exponent[] = {1, 0, 1};
  CK_OBJECT_HANDLE kek, pub, priv;
  CK_BYTE hash[64 + 19], sig[512], wrapped[2048], point[256], modulus[512], label[] = "bench";
  memset(hash, 0x5a, sizeof hash);
  CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s));
  CK_ATTRIBUTE kek_t[] = {
      {CKA_CLASS, &secret, sizeof secret}, {CKA_KEY_TYPE, &aes, sizeof aes}, {CKA_VALUE_LEN, &kek_len, sizeof kek_len},
      {CKA_TOKEN, &no, sizeof no},         {CKA_WRAP, &yes, sizeof yes},      {CKA_SENSITIVE, &yes, sizeof yes},
      {CKA_EXTRACTABLE, &no, sizeof no},
  };
  CK_MECHANISM aes_gen = {CKM_AES_KEY_GEN, NULL, 0};
  CHECK(f->C_GenerateKey(s, &aes_gen, kek_t, sizeof kek_t / sizeof *kek_t, &kek));

  CK_ATTRIBUTE pub_ec[] = {{CKA_TOKEN, &no, sizeof no}, {CKA_LABEL, label, 5}, {CKA_ID, label, 5},
                           {CKA_VERIFY, &yes, sizeof yes}, {CKA_EC_PARAMS, ec_params, ec_params_len}};
  CK_ATTRIBUTE pub_rsa[] = {{CKA_TOKEN, &no, sizeof no}, {CKA_LABEL, label, 5}, {CKA_ID, label, 5},
                            {CKA_VERIFY, &yes, sizeof yes}, {CKA_MODULUS_BITS, &bits, sizeof bits},
                            {CKA_PUBLIC_EXPONENT, exponent, sizeof exponent}};
  CK_ATTRIBUTE priv_t[] = {{CKA_TOKEN, &no, sizeof no},      {CKA_LABEL, label, 5},
                           {CKA_ID, label, 5},               {CKA_PRIVATE, &yes, sizeof yes},
                           {CKA_SIGN, &yes, sizeof yes},     {CKA_SENSITIVE, &yes, sizeof yes},
                           {CKA_EXTRACTABLE, &yes, sizeof yes}};
  CK_MECHANISM gen = {rsa ? CKM_RSA_PKCS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN, NULL, 0};
  CK_MECHANISM sign = {rsa ? CKM_RSA_PKCS : CKM_ECDSA, NULL, 0};
  CK_MECHANISM wrap = {CKM_AES_KEY_WRAP_PAD, NULL, 0};

  pthread_barrier_wait(&barrier);
  for (int i = 0; i < per_thread; i++) {
    CK_ULONG slen = sizeof sig, wlen = sizeof wrapped;
    if (work == CA_CSR) { /* a certificate for a given public key: one signature by the CA */
      CHECK(f->C_SignInit(s, &sign, ca_priv));
      CHECK(f->C_Sign(s, hash, hash_len, sig, &slen));
      continue;
    }
    if (rsa)
      CHECK(f->C_GenerateKeyPair(s, &gen, pub_rsa, 6, priv_t, 7, &pub, &priv));
    else
      CHECK(f->C_GenerateKeyPair(s, &gen, pub_ec, 5, priv_t, 7, &pub, &priv));
    /* The public key goes into the CSR or certificate: read it, as provline must. */
    CK_ATTRIBUTE get_ec[] = {{CKA_EC_POINT, point, sizeof point}};
    CK_ATTRIBUTE get_rsa[] = {{CKA_MODULUS, modulus, sizeof modulus}, {CKA_PUBLIC_EXPONENT, exponent, sizeof exponent}};
    CHECK(f->C_GetAttributeValue(s, pub, rsa ? get_rsa : get_ec, rsa ? 2 : 1));
    /* csr: the new key signs its CSR; ca-key: the CA signs the device certificate. */
    CHECK(f->C_SignInit(s, &sign, work == CA_KEY ? ca_priv : priv));
    CHECK(f->C_Sign(s, hash, hash_len, sig, &slen));
    CHECK(f->C_WrapKey(s, &wrap, kek, priv, wrapped, &wlen));
    CHECK(f->C_DestroyObject(s, priv));
    CHECK(f->C_DestroyObject(s, pub));
  }
  pthread_barrier_wait(&barrier);
  f->C_DestroyObject(s, kek);
  f->C_CloseSession(s);
  return NULL;
}

/*
 * The CA's private key: the token object labelled `label` (the CA provline signs with), or,
 * without a label, a session key pair of the key type made here on the login session (session
 * objects are visible to every session of this process and die when that session closes).
 */
static void find_or_make_ca(CK_SESSION_HANDLE login, const char *label) {
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  if (label) {
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE q[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)label, strlen(label)}, {CKA_TOKEN, &yes, sizeof yes}};
    CK_ULONG n = 0;
    CHECK(f->C_FindObjectsInit(login, q, 3));
    CHECK(f->C_FindObjects(login, &ca_priv, 1, &n));
    CHECK(f->C_FindObjectsFinal(login));
    if (n != 1) { fprintf(stderr, "raw: no private key labelled \"%s\" on the token\n", label); exit(2); }
    return;
  }
  CK_ULONG bits = 2048;
  CK_BYTE exponent[] = {1, 0, 1}, ca_label[] = "raw-bench-ca";
  CK_ATTRIBUTE pub_ec[] = {{CKA_TOKEN, &no, sizeof no}, {CKA_LABEL, ca_label, 12}, {CKA_VERIFY, &yes, sizeof yes},
                           {CKA_EC_PARAMS, ec_params, ec_params_len}};
  CK_ATTRIBUTE pub_rsa[] = {{CKA_TOKEN, &no, sizeof no},         {CKA_LABEL, ca_label, 12},
                            {CKA_VERIFY, &yes, sizeof yes},      {CKA_MODULUS_BITS, &bits, sizeof bits},
                            {CKA_PUBLIC_EXPONENT, exponent, sizeof exponent}};
  CK_ATTRIBUTE priv_t[] = {{CKA_TOKEN, &no, sizeof no},   {CKA_LABEL, ca_label, 12},      {CKA_PRIVATE, &yes, sizeof yes},
                           {CKA_SIGN, &yes, sizeof yes},  {CKA_SENSITIVE, &yes, sizeof yes}, {CKA_EXTRACTABLE, &no, sizeof no}};
  CK_MECHANISM gen = {rsa ? CKM_RSA_PKCS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN, NULL, 0};
  CK_OBJECT_HANDLE pub;
  if (rsa)
    CHECK(f->C_GenerateKeyPair(login, &gen, pub_rsa, 5, priv_t, 6, &pub, &ca_priv));
  else
    CHECK(f->C_GenerateKeyPair(login, &gen, pub_ec, 4, priv_t, 6, &pub, &ca_priv));
}

static char *read_pin(const char *source) {
  static char pin[256];
  if (strncmp(source, "env:", 4) == 0) {
    const char *v = getenv(source + 4);
    if (!v) { fprintf(stderr, "raw: PIN variable not set\n"); exit(2); }
    snprintf(pin, sizeof pin, "%s", v);
  } else if (strncmp(source, "file:", 5) == 0) {
    FILE *fp = fopen(source + 5, "r");
    if (!fp || !fgets(pin, sizeof pin, fp)) { fprintf(stderr, "raw: cannot read the pin file\n"); exit(2); }
    fclose(fp);
    pin[strcspn(pin, "\r\n")] = 0;
  } else {
    fprintf(stderr, "raw: PIN source must be file:PATH or env:VAR\n");
    exit(2);
  }
  return pin;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 7 || argc > 9) {
    fprintf(stderr, "usage: raw MODULE TOKEN PINSOURCE DEVICES THREADS KEYTYPE [csr|ca-key|ca-csr [CALABEL]]\n");
    return 2;
  }
  if (argc >= 8) {
    work_name = argv[7];
    if (strcmp(work_name, "csr") == 0) work = CSR;
    else if (strcmp(work_name, "ca-key") == 0) work = CA_KEY;
    else if (strcmp(work_name, "ca-csr") == 0) work = CA_CSR;
    else { fprintf(stderr, "raw: work must be csr, ca-key or ca-csr\n"); return 2; }
  }
  int devices = atoi(argv[4]), threads = atoi(argv[5]);
  const char *kt = argv[6];
  if (strcmp(kt, "P-256") == 0) {
    memcpy(ec_params, "\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 10); ec_params_len = 10; hash_len = 32;
  } else if (strcmp(kt, "P-384") == 0) {
    memcpy(ec_params, "\x06\x05\x2b\x81\x04\x00\x22", 7); ec_params_len = 7; hash_len = 48;
  } else if (strcmp(kt, "RSA-2048") == 0) {
    rsa = 1; hash_len = 19 + 32; /* DigestInfo(SHA-256) */
  } else { fprintf(stderr, "raw: unknown key type\n"); return 2; }
  (void)sig_len;
  per_thread = (devices + threads - 1) / threads;

  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) { fprintf(stderr, "raw: %s\n", dlerror()); return 2; }
  CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
  CHECK(gfl(&f));
  CK_C_INITIALIZE_ARGS init = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
  char want[33];
  snprintf(want, sizeof want, "%-32s", argv[2]);
  int found = 0;
  /* A SoftHSM token file that another process is rewriting reads as no token for a moment:
     initialise again and look again, as provline's own openHsm does. */
  for (int attempt = 1; attempt <= 5 && !found; attempt++) {
    if (attempt > 1) { f->C_Finalize(NULL); usleep(50000 * (attempt - 1)); }
    CHECK(f->C_Initialize(&init));
    CK_ULONG n = 0;
    CHECK(f->C_GetSlotList(CK_TRUE, NULL, &n));
    CK_SLOT_ID *slots = calloc(n ? n : 1, sizeof *slots);
    CHECK(f->C_GetSlotList(CK_TRUE, slots, &n));
    for (CK_ULONG i = 0; i < n && !found; i++) {
      CK_TOKEN_INFO ti;
      if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, want, 32) == 0) { slot = slots[i]; found = 1; }
    }
    free(slots);
  }
  if (!found) { fprintf(stderr, "raw: token not found\n"); return 2; }

  CK_SESSION_HANDLE login;
  CHECK(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &login));
  char *pin = read_pin(argv[3]);
  CK_RV rv = CKR_GENERAL_ERROR;
  for (int attempt = 1; attempt <= 5; attempt++) { /* same transient as above */
    rv = f->C_Login(login, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    if (rv != CKR_GENERAL_ERROR) break;
    usleep(50000 * attempt);
  }
  memset(pin, 0, strlen(pin));
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) { fprintf(stderr, "raw: login failed: 0x%lx\n", (unsigned long)rv); return 2; }

  if (work != CSR) find_or_make_ca(login, argc == 9 ? argv[8] : NULL);

  pthread_t *tids = calloc(threads, sizeof *tids);
  pthread_barrier_init(&barrier, NULL, threads + 1);
  for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, worker, NULL);
  pthread_barrier_wait(&barrier); /* all sessions and KEKs ready */
  double t0 = now();
  pthread_barrier_wait(&barrier); /* all devices done */
  double secs = now() - t0;
  for (int i = 0; i < threads; i++) pthread_join(tids[i], NULL);
  int total = per_thread * threads;
  printf("{\"work\":\"%s\",\"devices\":%d,\"threads\":%d,\"keyType\":\"%s\",\"seconds\":%.6f,\"devicesPerSecond\":%.1f}\n",
         work_name, total, threads, kt, secs, total / secs);
  f->C_CloseSession(login);
  f->C_Finalize(NULL);
  return 0;
}
