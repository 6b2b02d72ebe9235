/**
 * The status bar's model state (loading / ready / error), as a pure reducer over what the
 * client sees: the client starting and stopping, the server's `$/progress` for loading the
 * model, and the server's model status when it answers the status command.
 */

export type ModelState = "starting" | "loading" | "ready" | "error" | "stopped";

export interface StatusView {
  readonly state: ModelState;
  /** Status bar text, with a codicon. */
  readonly text: string;
  readonly tooltip: string;
  /** The last message about the model (without the headline). */
  readonly detail: string;
  /** Progress tokens of model loads in flight (a reload may start before the last ends). */
  readonly loadTokens: readonly (string | number)[];
}

export type StatusEvent =
  | { readonly kind: "starting" }
  | { readonly kind: "progressBegin"; readonly token: string | number; readonly title: string; readonly message?: string | undefined }
  | { readonly kind: "progressReport"; readonly token: string | number; readonly message?: string | undefined }
  | { readonly kind: "progressEnd"; readonly token: string | number; readonly message?: string | undefined }
  | { readonly kind: "serverStatus"; readonly state: string; readonly message?: string | undefined }
  | { readonly kind: "clientError"; readonly message: string }
  | { readonly kind: "stopped" };

/**
 * Whether a progress begin is the server's model load (title "hrm-lsp", message "loading
 * model X"); other progress, e.g. refining a function, is not model state.
 */
export function isModelProgress(title: string, message?: string): boolean {
  return /\bmodel\b/i.test(title) || /\bloading model\b/i.test(message ?? "");
}

/** Whether the end message of a model load reports a failure. */
export function isFailureMessage(message: string | undefined): boolean {
  return message !== undefined && /\b(could not|cannot|failed|error|not found|does not exist|invalid|corrupt)\b/i.test(message);
}

function view(state: ModelState, detail: string, loadTokens: readonly (string | number)[]): StatusView {
  const text: Record<ModelState, string> = {
    starting: "$(sync~spin) HRGC",
    loading: "$(sync~spin) HRGC: loading",
    ready: "$(check) HRGC",
    error: "$(error) HRGC",
    stopped: "$(circle-slash) HRGC",
  };
  const headline: Record<ModelState, string> = {
    starting: "hrm-lsp: starting the server",
    loading: "hrm-lsp: loading the model",
    ready: "hrm-lsp: model ready",
    error: "hrm-lsp: error",
    stopped: "hrm-lsp: server stopped",
  };
  const tooltip = detail.length > 0 ? `${headline[state]} — ${detail}` : headline[state];
  return { state, text: text[state], tooltip: `${tooltip}\nClick to show the output.`, detail, loadTokens };
}

/** The view before anything happened. */
export const INITIAL: StatusView = view("stopped", "", []);

/** Next view after `event`. */
export function reduce(current: StatusView, event: StatusEvent): StatusView {
  switch (event.kind) {
    case "starting":
      return view("starting", "", []);
    case "progressBegin":
      if (!isModelProgress(event.title, event.message)) {
        return current;
      }
      return view("loading", event.message ?? event.title, [...current.loadTokens, event.token]);
    case "progressReport":
      if (!current.loadTokens.includes(event.token)) {
        return current;
      }
      return view("loading", event.message ?? "", current.loadTokens);
    case "progressEnd": {
      if (!current.loadTokens.includes(event.token)) {
        return current;
      }
      const rest = current.loadTokens.filter((t) => t !== event.token);
      if (rest.length > 0) {
        return view("loading", current.detail, rest); // a newer load is still running
      }
      return view(isFailureMessage(event.message) ? "error" : "ready", event.message ?? "", rest);
    }
    case "serverStatus": {
      const state: ModelState | undefined =
        event.state === "ready"
          ? "ready"
          : event.state === "loading"
            ? "loading"
            : event.state === "failed"
              ? "error"
              : undefined;
      if (state === undefined) {
        return current;
      }
      return view(state, event.message ?? "", state === "loading" ? current.loadTokens : []);
    }
    case "clientError":
      return view("error", event.message, []);
    case "stopped":
      return view("stopped", "", []);
  }
}
