/** Signal handling shared by the entry points. */

/** The first SIGTERM or SIGINT, by name. */
export function processStop(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
}
