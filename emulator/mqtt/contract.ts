/**
 * The seam between the stand-in's MQTT broker (emulator/mqtt/broker.ts and its parts) and the
 * services that answer AWS's reserved request topics (fleet provisioning in
 * emulator/mqtt/fleet.ts). The broker authenticates, authorises (iot:Publish on the request
 * topic, iot:Receive on each reply) and routes; a service only computes replies.
 */

/** What the broker knows of the connection a request came in on. */
export interface ConnectionInfo {
  clientId: string;
  /** The registry id of the certificate the client authenticated with. */
  certificateId: string;
  /** 4 = MQTT 3.1.1, 5 = MQTT 5. */
  protocolVersion: 4 | 5;
}

export interface ServiceRequest {
  topic: string;
  payload: Buffer;
  connection: ConnectionInfo;
}

/** One answer, delivered to the requesting connection only (if it subscribed to the topic), as AWS does. */
export interface ServiceReply {
  topic: string;
  payload: Buffer;
}

export interface ReservedService {
  /** True when this service answers publishes on `topic`. */
  handles(topic: string): boolean;
  /** Replies in order; a rejected request is a reply on the `/rejected` topic, never a throw. */
  handle(request: ServiceRequest): Promise<ServiceReply[]>;
}

/**
 * The stand-in's reasons log (what AWS never tells a device): every refused connect,
 * subscribe or publish and every failed or successful provisioning step.
 */
export interface DataPlaneEvent {
  /** Epoch milliseconds. */
  time: number;
  /** e.g. connect.refused, subscribe.denied, publish.denied, jitr.registered, jitp.failed, fleet.rejected. */
  kind: string;
  clientId?: string;
  certificateId?: string;
  topic?: string;
  /** One sentence a person can act on: which state, which statement, which parameter, what the hook said. */
  reason: string;
  details?: Record<string, unknown>;
}

export type RecordEvent = (event: Omit<DataPlaneEvent, 'time'>) => void;
