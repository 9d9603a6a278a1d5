// A part of the daemon with a lifetime: the composition root starts the
// services in order and stops them in reverse.
export interface Service {
  readonly name: string;
  start(): Promise<void> | void;
  stop(): Promise<void> | void;
}
