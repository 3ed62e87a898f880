// Type declarations for @authgate/client (index.js).

/** What the client keeps in its storage: the pair of one session (bearer mode only). */
export interface StoredTokens {
  accessToken: string;
  refreshToken: string;
  sessionId: string;
  platform: string;
  user: { id: string; name: string };
  /** Unix seconds. */
  accessTokenExpiresAt: number;
  /** Unix seconds. */
  refreshTokenExpiresAt: number;
}

/** Where the tokens live. Each method may return a promise. */
export interface TokenStorage {
  get(): StoredTokens | null | Promise<StoredTokens | null>;
  set(tokens: StoredTokens): void | Promise<void>;
  clear(): void | Promise<void>;
}

/** What the application sees of a session: never a token. */
export interface SessionInfo {
  sessionId: string | null;
  platform: string | null;
  user: { id: string; name: string } | null;
  accessTokenExpiresAt: number | null;
  refreshTokenExpiresAt: number | null;
}

/** The gateway's codes after which the session is gone; `onLogout` receives one of them. */
export type LogoutCode =
  | 'session_revoked'
  | 'session_replaced'
  | 'token_theft_detected'
  | 'invalid_refresh_token';

export interface ClientOptions {
  /** The gateway's origin, e.g. "https://app.example.com". Default: the page's origin. */
  baseUrl?: string;
  /** The gateway's `login.prefix`. Default "/auth". */
  prefix?: string;
  /** Sent at login in `platformHeader` ("web", "h5", "app", ...). Default: none (the gateway's default). */
  platform?: string;
  /** The gateway's `platforms.header`. Default "X-Platform". */
  platformHeader?: string;
  /** Sent at login as `X-Device-Id`; shown in the session list. */
  deviceId?: string;
  /** Where the pair is kept (bearer mode). Default: memoryStorage(). */
  storage?: TokenStorage;
  /** The gateway's `token.refresh_header`. Default "refresh-token". */
  refreshHeader?: string;
  /** Called once when the gateway ends the session, after the storage is cleared. */
  onLogout?: (code: LogoutCode) => void;
  /** "bearer" (default): tokens in storage, `Authorization: Bearer`. "cookie": the gateway's `[browser]` cookies. */
  mode?: 'bearer' | 'cookie';
  /** Refresh before sending when the access token has fewer seconds left than this. Default 3. */
  refreshMarginSecs?: number;
  /** Cookie mode: the gateway's `browser.csrf_cookie`. Default "authgate_csrf". */
  csrfCookie?: string;
  /** Cookie mode: the header the CSRF cookie is echoed in. Default "X-CSRF-Token". */
  csrfHeader?: string;
  /** Bearer mode: `credentials` for requests that do not set their own. Cookie mode always uses "include". */
  credentials?: RequestCredentials;
  /** The fetch to use. Default: the global fetch, looked up at each call. */
  fetch?: typeof globalThis.fetch;
  /** The current time in milliseconds. Default Date.now. */
  now?: () => number;
}

export interface LoginOptions {
  /** From `captcha()`, when the gateway answered `captcha_required`. */
  captchaId?: string;
  /** The user's answer to that captcha. */
  captcha?: string;
}

export interface Captcha {
  captchaId: string;
  /** A `data:image/png;base64,...` URL. */
  image: string;
  expiresIn: number;
}

/** One entry of `GET <prefix>/sessions` (contract §5). */
export interface GatewaySession {
  session_id: string;
  user_id?: string;
  platform: string;
  device: string | null;
  ip: string | null;
  user_agent: string | null;
  created_at: number;
  last_seen_at: number;
  expires_at?: number;
  current: boolean;
}

export interface AuthgateClient {
  readonly mode: 'bearer' | 'cookie';
  /** fetch() with the session: the token attached, refreshed and retried as needed. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  login(username: string, password: string, options?: LoginOptions): Promise<SessionInfo & { upstream?: unknown }>;
  logout(): Promise<void>;
  logoutAll(): Promise<void>;
  sessions(): Promise<GatewaySession[]>;
  /** Refreshes now (shared with any refresh in progress). Cookie mode resolves with null. */
  refresh(): Promise<SessionInfo | null>;
  captcha(): Promise<Captcha>;
  /** The stored session (bearer) or what the last login said (cookie); null when logged out. */
  current(): Promise<SessionInfo | null>;
}

export function createClient(options?: ClientOptions): AuthgateClient;

export class AuthgateError extends Error {
  /** The gateway's error code, or network_error, body_not_replayable, not_logged_in, bad_response, http_<status>. */
  code: string;
  /** The HTTP status of the answer that caused it; 0 when there was none. */
  status: number;
  /** Seconds, from `Retry-After`. */
  retryAfter: number | null;
  /** The JSON body of the answer, when it had one. */
  body: unknown;
  constructor(code: string, message: string, options?: { status?: number; retryAfter?: number | null; body?: unknown; cause?: unknown });
}

export function memoryStorage(): TokenStorage;
export function webStorage(area: Storage, key?: string): TokenStorage;
export function localStorageAdapter(key?: string): TokenStorage;
export function sessionStorageAdapter(key?: string): TokenStorage;
/** The payload of a JWT, NOT verified; null for anything else. */
export function decodeJwt(token: unknown): Record<string, unknown> | null;
