/**
 * Batched mode: a bounded in-memory queue posted to `/v1/batch` when a batch is full or
 * `flushInterval` has passed, one request at a time. Every message carries its own `message_id`,
 * so re-posting a batch after an unknown outcome stores nothing twice. A full queue drops the
 * oldest message (counted, logged at the 1st, 2nd, 4th… drop, and reported to `onError`).
 */

import { asError, encode, type Http, retryDelay } from "./core.js";
import { errorFor, isRetryable, QueueFull, ShutDown, TributaryError, ValidationError } from "./errors.js";
import type { Message } from "./types.js";

export type ErrorCallback = (error: TributaryError, messages: Message[]) => void;
export type Logger = Pick<Console, "warn" | "error">;

export interface SenderOptions {
  batchSize: number;
  flushInterval: number;
  maxQueueSize: number;
  onError: ErrorCallback | undefined;
  logger: Logger;
}

// The server refuses batches over 1 MiB; leave room for the envelope.
const MAX_BATCH_BYTES = 1024 * 1024 - 1024;
const utf8 = new TextEncoder();

export class BatchSender {
  dropped = 0;
  delivered = 0;
  failed = 0;
  private queue: Message[] = [];
  private inFlight = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running: Promise<void> | undefined;
  private closed = false;
  private abandoned = false;
  private wakeSleepers = new Set<() => void>();

  constructor(
    private readonly http: Http,
    private readonly options: SenderOptions,
  ) {}

  get queued(): number {
    return this.queue.length + this.inFlight;
  }

  put(message: Message): void {
    if (this.closed) {
      this.drop(message, new ShutDown("the client is shut down; message not sent"));
      return;
    }
    if (this.queue.length >= this.options.maxQueueSize) {
      const oldest = this.queue.shift() as Message;
      this.drop(oldest, new QueueFull(`queue full (${this.options.maxQueueSize} messages); dropped the oldest`));
    }
    this.queue.push(message);
    if (this.queue.length >= this.options.batchSize) void this.kick();
    else this.schedule();
  }

  /** Resolves once everything queued so far is stored or has failed. */
  async flush(): Promise<void> {
    this.cancelTimer();
    while (this.queue.length > 0 || this.running) await (this.running ?? this.kick());
  }

  /** Flush (bounded by `timeout` ms), then refuse new messages; what is left goes to `onError`. */
  async shutdown(timeout: number): Promise<boolean> {
    this.closed = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeout);
    });
    const done = await Promise.race([this.flush().then(() => true), expired]);
    clearTimeout(timer);
    if (!done) {
      this.abandoned = true;
      for (const wake of this.wakeSleepers) wake();
      const leftover = this.queue.splice(0);
      if (leftover.length) this.fail(new ShutDown("shut down before these messages could be sent"), leftover);
      await this.running;
    }
    return done;
  }

  private drop(message: Message, error: TributaryError): void {
    this.dropped += 1;
    if ((this.dropped & (this.dropped - 1)) === 0) {
      this.options.logger.warn(`tributary: ${error.message} (${this.dropped} dropped so far)`);
    }
    this.report(error, [message]);
  }

  private schedule(): void {
    if (this.timer === undefined && this.running === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.kick();
      }, this.options.flushInterval);
    }
  }

  private cancelTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private kick(): Promise<void> {
    this.cancelTimer();
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
      if (this.queue.length > 0) this.schedule();
    });
    return this.running;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.abandoned) {
      const batch = this.queue.splice(0, this.options.batchSize);
      this.inFlight = batch.length;
      try {
        await this.deliver(batch);
      } catch (error) {
        this.fail(asError(error), batch);
      } finally {
        this.inFlight = 0;
      }
    }
  }

  private async deliver(batch: Message[]): Promise<void> {
    let chunk: Message[] = [];
    let parts: string[] = [];
    let size = 0;
    for (const message of batch) {
      let part: string;
      try {
        part = encode(message);
      } catch (error) {
        this.fail(asError(error), [message]);
        continue;
      }
      const bytes = utf8.encode(part).length + 1;
      if (bytes > MAX_BATCH_BYTES) {
        this.fail(new ValidationError("message is over 1 MiB", { code: "payload_too_large" }), [message]);
        continue;
      }
      if (parts.length > 0 && size + bytes > MAX_BATCH_BYTES) {
        await this.post(chunk, parts);
        chunk = [];
        parts = [];
        size = 0;
      }
      chunk.push(message);
      parts.push(part);
      size += bytes;
    }
    if (parts.length > 0) await this.post(chunk, parts);
  }

  private async post(messages: Message[], parts: string[]): Promise<void> {
    const body = `{"batch":[${parts.join(",")}]}`;
    const retry = this.http.options.retry;
    for (let attempt = 0; ; attempt++) {
      let answer: unknown;
      try {
        answer = await this.http.once("POST", "/v1/batch", body);
      } catch (caught) {
        const error = asError(caught);
        const details = error.details as { results?: unknown } | undefined;
        if (error.code === "no_valid_messages" && details && typeof details === "object") {
          this.results(messages, details.results);
          return;
        }
        if (!isRetryable(error) || attempt >= retry.maxRetries || this.abandoned) {
          this.fail(error, messages);
          return;
        }
        await this.sleep(retryDelay(retry, attempt, error));
        continue;
      }
      this.results(messages, (answer as { results?: unknown } | null)?.results);
      return;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.wakeSleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.wakeSleepers.add(wake);
    });
  }

  private results(messages: Message[], results: unknown): void {
    if (!Array.isArray(results) || results.length !== messages.length) {
      this.fail(new ValidationError("unexpected answer to /v1/batch", { code: "bad_response" }), messages);
      return;
    }
    results.forEach((result: { event_id?: string; status?: number } | null, index) => {
      const message = messages[index] as Message;
      if (result?.event_id) this.delivered += 1;
      else this.fail(errorFor(typeof result?.status === "number" ? result.status : 400, result), [message]);
    });
  }

  reportFailure(error: TributaryError, messages: Message[]): void {
    this.fail(error, messages);
  }

  private fail(error: TributaryError, messages: Message[]): void {
    this.failed += messages.length;
    this.options.logger.error(`tributary: ${Math.max(1, messages.length)} message(s) not stored: ${error.name}: ${error.message}`);
    this.report(error, messages);
  }

  private report(error: TributaryError, messages: Message[]): void {
    try {
      this.options.onError?.(error, messages);
    } catch (callbackError) {
      this.options.logger.error("tributary: the onError callback threw", callbackError);
    }
  }
}
