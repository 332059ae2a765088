/**
 * The stack's slot for the local AWS IoT stand-in (emulator/). Until the stand-in lands the
 * slot reports nulls, as `stack status --json` documents.
 */
import type { StackPaths, StackState } from './home.js';

export interface AwsStatus {
  endpoint: string | null;
  s3Endpoint: string | null;
  region: string | null;
  credentialsFile: string | null;
  profile: string | null;
  bucket: string | null;
  pid: number | null;
  running: boolean;
}

export function awsStatus(_paths: StackPaths, _state: StackState): AwsStatus {
  return { endpoint: null, s3Endpoint: null, region: null, credentialsFile: null, profile: null, bucket: null, pid: null, running: false };
}

/** Starts the stand-in; returns what to record in stack.json. */
export function awsUp(_paths: StackPaths, state: StackState): Promise<StackState['aws']> {
  return Promise.resolve(state.aws);
}

export async function awsDown(_paths: StackPaths): Promise<void> {}
