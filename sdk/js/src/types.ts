/** Shapes of the API's JSON (times are ISO 8601 strings, UTC). */

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export interface EventAccepted {
  event_id: string;
  /** True when this message id had been stored before. */
  duplicate: boolean;
}

export interface ProjectState {
  status: string | null;
  params: Record<string, JsonValue>;
  first_seen_at: string;
  last_activity_at: string | null;
}

export interface Identity {
  source: string;
  external_id: string;
}

export interface Customer {
  id: string;
  email: string;
  name: string | null;
  created_at: string;
  updated_at: string;
  last_activity_at: string | null;
  past_emails: string[];
  projects: Record<string, ProjectState>;
  identities: Identity[];
}

export interface TimelineEntry {
  id: number;
  kind: string;
  project: string | null;
  occurred_at: string;
  recorded_at: string;
  data: Record<string, unknown>;
  event: {
    id: string;
    type: string;
    channel: string;
    source: string | null;
    occurred_at: string;
    received_at: string;
  } | null;
}

export interface PingFields {
  project?: string;
  /** Event time; default: when the call was made. */
  timestamp?: Date | string;
  /** Deduplicates retries; default: a fresh UUID per call. */
  messageId?: string;
}

export interface IdentifyFields extends PingFields {
  name?: string;
  status?: string;
  params?: Record<string, JsonValue>;
  paramsOnce?: Record<string, JsonValue>;
  paramsUnset?: string[];
}

export interface ListFilters {
  project?: string;
  status?: string;
  email?: string;
  /** Equality on params; values compared as JSON (5 matches 5, "5" matches "5"). */
  params?: Record<string, string | number | boolean>;
  q?: string;
  activeSince?: Date | string;
  createdSince?: Date | string;
  sort?: "created_at" | "-created_at" | "last_activity_at" | "-last_activity_at";
  /** Customers fetched per request (≤ 200). */
  pageSize?: number;
}

/** A queued message, as posted to `/v1/batch`. */
export interface Message {
  type: "identify" | "ping";
  email: string;
  timestamp?: string;
  message_id: string;
  project?: string;
  name?: string;
  status?: string;
  params?: Record<string, JsonValue>;
  params_once?: Record<string, JsonValue>;
  params_unset?: string[];
}
