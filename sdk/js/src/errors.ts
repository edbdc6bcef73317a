/** Typed errors: one class per way a call can fail, all extending `TributaryError`. */

export interface ErrorFields {
  status?: number | undefined;
  code?: string | undefined;
  details?: unknown;
}

export class TributaryError extends Error {
  /** HTTP status; undefined when no answer arrived. */
  readonly status: number | undefined;
  /** The server's error code, e.g. `validation_error`, `project_not_found`. */
  readonly code: string | undefined;
  readonly details: unknown;

  constructor(message: string, fields: ErrorFields = {}) {
    super(message);
    this.name = new.target.name;
    this.status = fields.status;
    this.code = fields.code;
    this.details = fields.details;
  }
}

/** 401: the API key is missing, invalid or revoked. */
export class AuthenticationError extends TributaryError {}
/** 403: the key lacks the scope, or is bound to another project. */
export class PermissionDenied extends TributaryError {}
/** 404: no such customer or project, or not visible to this key. */
export class NotFound extends TributaryError {}
/** 400/409/413: refused as invalid; retrying will not help. */
export class ValidationError extends TributaryError {}
/** 5xx: the server failed or is unavailable; safe to retry. */
export class ServerError extends TributaryError {}
/** No answer: connection refused or reset, or the request timed out. */
export class NetworkError extends TributaryError {}
/** The queue was full: the oldest message was dropped to make room. */
export class QueueFull extends TributaryError {}
/** The client was shut down before the message could be sent. */
export class ShutDown extends TributaryError {}

/** 429: too many requests; `retryAfter` is the server's hint in milliseconds. */
export class RateLimited extends TributaryError {
  readonly retryAfter: number | undefined;

  constructor(message: string, fields: ErrorFields & { retryAfter?: number | undefined } = {}) {
    super(message, fields);
    this.retryAfter = fields.retryAfter;
  }
}

/** `Retry-After` in milliseconds: seconds or an HTTP date. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const when = Date.parse(value);
  return Number.isNaN(when) ? undefined : Math.max(0, when - Date.now());
}

/** The typed error for a non-2xx answer with body `{"error": {code, message, details}}`. */
export function errorFor(status: number, body: unknown, retryAfter?: string | null): TributaryError {
  const error =
    typeof body === "object" && body !== null && "error" in body && typeof body.error === "object" && body.error
      ? (body.error as { code?: unknown; message?: unknown; details?: unknown })
      : {};
  const message = typeof error.message === "string" && error.message ? error.message : `HTTP ${status}`;
  const fields: ErrorFields = {
    status,
    code: typeof error.code === "string" ? error.code : undefined,
    details: error.details,
  };
  if (status === 401) return new AuthenticationError(message, fields);
  if (status === 403) return new PermissionDenied(message, fields);
  if (status === 404) return new NotFound(message, fields);
  if (status === 429) return new RateLimited(message, { ...fields, retryAfter: parseRetryAfter(retryAfter ?? null) });
  if (status >= 500) return new ServerError(message, fields);
  return new ValidationError(message, fields);
}

export function isRetryable(error: unknown): boolean {
  return error instanceof RateLimited || error instanceof ServerError || error instanceof NetworkError;
}
