/**
 * VS Code settings (`hrmLsp.*`) -> what the server receives, without VS Code.
 *
 * The server reads one settings object (initializationOptions, the answer to
 * `workspace/configuration` for section `hrmLsp`, and didChangeConfiguration), with the
 * camelCase keys of `hrm_lsp/server/settings.py`. Some `hrmLsp.*` settings belong to this
 * client only (how to start the server, protocol tracing); they must not reach the server,
 * which would warn about unknown keys. Unset values are left out so the server's own
 * defaults apply; values of the wrong type are dropped here with a warning rather than
 * sent (the server would drop them too, but the warning is clearer where the user edits).
 */

/** Settings section shared by VS Code and the server's `workspace/configuration`. */
export const SECTION = "hrmLsp";

export type SettingKind = "string" | "boolean" | "integer" | "number" | "stringArray";

/** Every setting the server understands, by its camelCase key (mirrors settings.py). */
export const SERVER_SETTINGS: Readonly<Record<string, SettingKind>> = {
  modelPath: "string",
  device: "string",
  maxTokens: "integer",
  maxTokensMultiline: "integer",
  temperature: "number",
  topP: "number",
  inlineMode: "string",
  refine: "boolean",
  maxRefinementIterations: "integer",
  refinementThreshold: "number",
  validators: "stringArray",
  goPath: "string",
  debounceMs: "integer",
  timeBudgetMs: "integer",
  maxContextChars: "integer",
  completionSources: "string",
  minConfidence: "number",
};

/** `hrmLsp.*` settings that only this client reads. */
export const CLIENT_SETTINGS: readonly string[] = ["server.path", "server.extraArgs", "server.logFile", "trace.server"];

export type ServerSettings = Record<string, string | boolean | number | string[] | null>;

export interface MappedSettings {
  readonly settings: ServerSettings;
  readonly warnings: readonly string[];
}

function matches(kind: SettingKind, value: unknown): boolean {
  switch (kind) {
    case "string":
      return typeof value === "string";
    case "boolean":
      return typeof value === "boolean";
    case "integer":
      return typeof value === "number" && Number.isInteger(value);
    case "number":
      return typeof value === "number" && Number.isFinite(value);
    case "stringArray":
      return Array.isArray(value) && value.every((v) => typeof v === "string");
  }
}

/**
 * Map a settings reader (`key => value`, e.g. `WorkspaceConfiguration.get`) to the server's
 * settings object. Keys the user never set come back `undefined` and are omitted — or, with
 * `nullForUnset` (answers to `workspace/configuration`), sent as `null`, which the server
 * reads as "back to the default", so removing a setting takes effect without a restart.
 */
export function toServerSettings(get: (key: string) => unknown, nullForUnset = false): MappedSettings {
  const settings: ServerSettings = {};
  const warnings: string[] = [];
  for (const [key, kind] of Object.entries(SERVER_SETTINGS)) {
    const value = get(key);
    if (value === undefined || value === null) {
      if (nullForUnset) {
        settings[key] = null;
      }
      continue;
    }
    if (!matches(kind, value)) {
      warnings.push(`${SECTION}.${key}: expected ${kind}, got ${JSON.stringify(value)}; using the server's default`);
      if (nullForUnset) {
        settings[key] = null;
      }
      continue;
    }
    settings[key] = kind === "stringArray" ? [...new Set(value as string[])] : (value as string | boolean | number);
  }
  return { settings, warnings };
}

export interface LaunchSettings {
  /** `hrmLsp.server.path`, empty when unset. */
  readonly path: string;
  readonly args: readonly string[];
}

/** Command-line arguments for `hrm-lsp`: `serve`, an optional log file, then extra args. */
export function serverArgs(get: (key: string) => unknown): LaunchSettings {
  const path = get("server.path");
  const logFile = get("server.logFile");
  const extra = get("server.extraArgs");
  const args = ["serve"];
  if (typeof logFile === "string" && logFile.trim().length > 0) {
    args.push("--log-file", logFile.trim());
  }
  if (Array.isArray(extra)) {
    for (const a of extra) {
      if (typeof a === "string" && a.length > 0) {
        args.push(a);
      }
    }
  }
  return { path: typeof path === "string" ? path.trim() : "", args };
}

/** Whether a configuration change under `hrmLsp` needs a server restart (launch settings). */
export function needsRestart(affects: (key: string) => boolean): boolean {
  return ["server.path", "server.extraArgs", "server.logFile"].some((k) => affects(`${SECTION}.${k}`));
}
