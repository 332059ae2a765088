/** The life cycle lives in the pure journal model (src/batch/states.ts); re-exported for src/jobs. */
export * from '../batch/states.js';
