export { Customers, Tributary, type TributaryOptions } from "./client.js";
export {
  AuthenticationError,
  NetworkError,
  NotFound,
  PermissionDenied,
  QueueFull,
  RateLimited,
  ServerError,
  ShutDown,
  TributaryError,
  ValidationError,
} from "./errors.js";
export type { ErrorCallback, Logger } from "./sender.js";
export type {
  Customer,
  EventAccepted,
  Identity,
  IdentifyFields,
  JsonValue,
  ListFilters,
  Message,
  PingFields,
  ProjectState,
  TimelineEntry,
} from "./types.js";
