/** What the client and the sender share: messages, retry timing, HTTP with retries. */

import { errorFor, isRetryable, NetworkError, RateLimited, TributaryError, ValidationError } from "./errors.js";
import type { IdentifyFields, Message, PingFields } from "./types.js";

export const VERSION = "0.1.0";

export interface RetryPolicy {
  maxRetries: number;
  /** Milliseconds. */
  baseDelay: number;
  maxDelay: number;
}

/** Exponential backoff with jitter; a 429's `Retry-After` wins when longer (capped at 5 minutes). */
export function retryDelay(policy: RetryPolicy, attempt: number, error: unknown): number {
  const ceiling = Math.min(policy.maxDelay, policy.baseDelay * 2 ** attempt);
  let wait = ceiling / 2 + Math.random() * (ceiling / 2);
  if (error instanceof RateLimited && error.retryAfter !== undefined) {
    wait = Math.max(wait, Math.min(error.retryAfter, 300_000));
  }
  return wait;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function uuid(): string {
  const webCrypto = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (webCrypto?.randomUUID) return webCrypto.randomUUID();
  // Node 18 without a global `crypto`: 122 random bits are plenty for a message id.
  const hex = Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16));
  hex[12] = "4";
  hex[16] = ((Math.floor(Math.random() * 4) + 8) as number).toString(16);
  const s = hex.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

export function isoTime(value: Date | string | undefined): string {
  if (value === undefined) return new Date().toISOString();
  return typeof value === "string" ? value : value.toISOString();
}

export function pingMessage(email: string, fields: PingFields = {}): Message {
  const message: Message = { type: "ping", email, message_id: fields.messageId ?? uuid() };
  // With the caller's own messageId and no timestamp the server's receipt time orders it: the id
  // then names the same message however often the app calls again (a duplicate, not a 409).
  if (fields.timestamp !== undefined || fields.messageId === undefined) {
    message.timestamp = isoTime(fields.timestamp);
  }
  if (fields.project !== undefined) message.project = fields.project;
  return message;
}

export function identifyMessage(email: string, fields: IdentifyFields = {}): Message {
  const message = pingMessage(email, fields);
  message.type = "identify";
  if (fields.name !== undefined) message.name = fields.name;
  if (fields.status !== undefined) message.status = fields.status;
  // Copied now: in batched mode the caller may change its object before the message is sent.
  if (fields.params) message.params = { ...fields.params };
  if (fields.paramsOnce) message.params_once = { ...fields.paramsOnce };
  if (fields.paramsUnset) message.params_unset = [...fields.paramsUnset];
  return message;
}

/** Strict JSON: NaN/Infinity (which JSON.stringify turns into null) are refused, not sent. */
export function encode(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) => {
    if (typeof item === "number" && !Number.isFinite(item)) {
      throw new ValidationError("numbers must be finite (no NaN or Infinity)", { code: "not_json" });
    }
    if (typeof item === "bigint") {
      throw new ValidationError("BigInt is not JSON", { code: "not_json" });
    }
    return item;
  });
}

export interface HttpOptions {
  apiKey: string;
  baseUrl: string;
  timeout: number;
  retry: RetryPolicy;
  fetch: typeof fetch;
}

export class Http {
  constructor(readonly options: HttpOptions) {}

  /** One attempt: the parsed JSON of a 2xx answer, or a typed error. */
  async once(method: string, path: string, body?: string, query?: [string, string][]): Promise<unknown> {
    const url = new URL(this.options.baseUrl + path);
    for (const [name, value] of query ?? []) url.searchParams.append(name, value);
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.options.apiKey}`,
      Accept: "application/json",
    };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.options.timeout);
    let response: Response;
    let text: string;
    try {
      response = await this.options.fetch(url, { method, headers, body, signal: abort.signal });
      text = await response.text();
    } catch (error) {
      const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      throw new NetworkError(`${method} ${path} failed: ${reason}`);
    } finally {
      clearTimeout(timer);
    }
    let parsed: unknown = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (response.ok) throw new ValidationError("the server's answer is not JSON", { status: response.status });
      }
    }
    if (response.ok) return parsed;
    throw errorFor(response.status, parsed, response.headers.get("retry-after"));
  }

  /** With retries on network errors, 429 and 5xx: every request the SDK makes is idempotent. */
  async request(method: string, path: string, body?: string, query?: [string, string][]): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(method, path, body, query);
      } catch (error) {
        if (!isRetryable(error) || attempt >= this.options.retry.maxRetries) throw error;
        await sleep(retryDelay(this.options.retry, attempt, error));
      }
    }
  }
}

export function asError(error: unknown): TributaryError {
  if (error instanceof TributaryError) return error;
  return new TributaryError(error instanceof Error ? error.message : String(error));
}
