/** `Tributary`: batched identify/ping (or awaited, for serverless handlers) and the read API. */

import { encode, Http, identifyMessage, isoTime, pingMessage, VERSION } from "./core.js";
import { ValidationError } from "./errors.js";
import { BatchSender, type ErrorCallback, type Logger } from "./sender.js";
import type {
  Customer,
  EventAccepted,
  IdentifyFields,
  ListFilters,
  Message,
  PingFields,
  TimelineEntry,
} from "./types.js";

export interface TributaryOptions {
  /** Default: `TRIBUTARY_URL` from the environment when there is one, else http://127.0.0.1:8000. */
  baseUrl?: string;
  /**
   * `true`: every identify/ping is sent before its promise settles, which resolves to the stored
   * event or rejects with a typed error (for serverless route handlers and scripts).
   * `false` (default): calls queue the message and resolve at once with `null`; a sender posts
   * batches in the background and never rejects — failures go to `onError`.
   */
  sync?: boolean;
  /** Messages per `/v1/batch` request (≤ 500). Default 100. */
  batchSize?: number;
  /** Milliseconds a message may wait for a batch to fill. Default 500. */
  flushInterval?: number;
  /** Queue bound; when full the oldest message is dropped. Default 10 000. */
  maxQueueSize?: number;
  maxRetries?: number;
  /** Milliseconds; doubles per retry, with jitter, up to `retryMaxDelay`. */
  retryBaseDelay?: number;
  retryMaxDelay?: number;
  /** Milliseconds per request. Default 10 000. */
  timeout?: number;
  onError?: ErrorCallback;
  logger?: Logger;
  /** A `fetch` implementation; default the global one. */
  fetch?: typeof fetch;
}

function envBaseUrl(): string | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return env?.TRIBUTARY_URL;
}

const ref = (idOrEmail: string): string => encodeURIComponent(idOrEmail).replace(/%40/g, "@");

export class Customers {
  constructor(private readonly http: Http) {}

  async get(idOrEmail: string): Promise<Customer> {
    return (await this.http.request("GET", `/v1/customers/${ref(idOrEmail)}`)) as Customer;
  }

  /** Every matching customer, fetching pages as the iteration goes. */
  async *list(filters: ListFilters = {}): AsyncGenerator<Customer, void, undefined> {
    const query: [string, string][] = [];
    for (const name of ["project", "status", "email", "q", "sort"] as const) {
      const value = filters[name];
      if (value !== undefined) query.push([name, value]);
    }
    if (filters.activeSince !== undefined) query.push(["active_since", isoTime(filters.activeSince)]);
    if (filters.createdSince !== undefined) query.push(["created_since", isoTime(filters.createdSince)]);
    // JSON-encoded, so 5 matches the number 5 and "5" the string, as the server compares them.
    for (const [key, value] of Object.entries(filters.params ?? {})) query.push([`params.${key}`, JSON.stringify(value)]);
    query.push(["limit", String(filters.pageSize ?? 200)]);
    yield* this.pages<Customer>("/v1/customers", query);
  }

  /** The customer's timeline, newest first, over all pages. */
  async *timeline(idOrEmail: string, options: { pageSize?: number } = {}): AsyncGenerator<TimelineEntry, void, undefined> {
    yield* this.pages<TimelineEntry>(`/v1/customers/${ref(idOrEmail)}/timeline`, [
      ["limit", String(options.pageSize ?? 200)],
    ]);
  }

  /** Erase the customer and redact its personal data in stored events (admin scope). */
  async erase(idOrEmail: string): Promise<void> {
    await this.http.request("DELETE", `/v1/customers/${ref(idOrEmail)}`);
  }

  private async *pages<T>(path: string, query: [string, string][]): AsyncGenerator<T, void, undefined> {
    let cursor: string | null = null;
    do {
      const page = (await this.http.request("GET", path, undefined, cursor ? [...query, ["cursor", cursor]] : query)) as {
        data: T[];
        next_cursor: string | null;
      };
      yield* page.data;
      cursor = page.next_cursor;
    } while (cursor);
  }
}

export class Tributary {
  static readonly version = VERSION;
  readonly customers: Customers;
  readonly sync: boolean;
  private readonly http: Http;
  private readonly sender: BatchSender | undefined;

  constructor(apiKey: string, options: TributaryOptions = {}) {
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new TypeError("no fetch available: pass options.fetch");
    this.http = new Http({
      apiKey,
      baseUrl: (options.baseUrl ?? envBaseUrl() ?? "http://127.0.0.1:8000").replace(/\/+$/, ""),
      timeout: options.timeout ?? 10_000,
      retry: {
        maxRetries: options.maxRetries ?? 8,
        baseDelay: options.retryBaseDelay ?? 500,
        maxDelay: options.retryMaxDelay ?? 30_000,
      },
      fetch: fetchImpl.bind(globalThis),
    });
    this.customers = new Customers(this.http);
    this.sync = options.sync ?? false;
    if (!this.sync) {
      this.sender = new BatchSender(this.http, {
        batchSize: Math.max(1, Math.min(options.batchSize ?? 100, 500)),
        flushInterval: options.flushInterval ?? 500,
        maxQueueSize: Math.max(1, options.maxQueueSize ?? 10_000),
        onError: options.onError,
        logger: options.logger ?? console,
      });
    }
  }

  /** Create or update a customer. Batched: resolves at once with null. Sync: the stored event. */
  identify(email: string, fields: IdentifyFields = {}): Promise<EventAccepted | null> {
    return this.send(() => identifyMessage(email, fields));
  }

  /** Record activity for a customer. */
  ping(email: string, fields: PingFields = {}): Promise<EventAccepted | null> {
    return this.send(() => pingMessage(email, fields));
  }

  /** Messages dropped because the queue was full (or the client was shut down). */
  get dropped(): number {
    return this.sender?.dropped ?? 0;
  }

  /** Messages waiting to be sent, including the batch in flight. */
  get queued(): number {
    return this.sender?.queued ?? 0;
  }

  /** Resolves once every message queued so far is stored or has failed. */
  async flush(): Promise<void> {
    await this.sender?.flush();
  }

  /** Flush (bounded by `timeout` ms, default 5 000) and refuse further messages. */
  async shutdown(timeout = 5_000): Promise<boolean> {
    return (await this.sender?.shutdown(timeout)) ?? true;
  }

  private async send(build: () => Message): Promise<EventAccepted | null> {
    let message: Message;
    try {
      message = build();
    } catch (cause) {
      // Bad argument types: reported, never thrown, in batched mode.
      const error = new ValidationError(`invalid arguments: ${String(cause)}`, { code: "invalid_arguments" });
      if (!this.sender) throw error;
      this.sender.reportFailure(error, []);
      return null;
    }
    if (this.sender) {
      this.sender.put(message);
      return null;
    }
    const { type, ...fields } = message;
    return (await this.http.request("POST", `/v1/${type}`, encode(fields))) as EventAccepted;
  }
}
