/**
 * Picking the server's "Refine this function" among the code actions at the cursor, without
 * VS Code: the server offers it as a code action (with an edit, a command, or both) and as
 * a plain command for clients that prefer commands.
 */

/** The title the server gives the action (shown in the light-bulb menu). */
export const REFINE_TITLE = "Refine this function";

interface CommandLike {
  readonly title: string;
  readonly command: string;
}

interface ActionLike {
  readonly title: string;
  readonly kind?: string;
  readonly command?: CommandLike | string;
  readonly edit?: unknown;
}

/** The refine action among `actions` (LSP `Command | CodeAction`), or undefined. */
export function pickRefineAction<T extends ActionLike>(actions: readonly T[]): T | undefined {
  const wanted = REFINE_TITLE.toLowerCase();
  return actions.find((a) => a.title.toLowerCase().startsWith(wanted));
}

/** The server's `workspace/executeCommand` ids (hrm_lsp/server/server.py). */
export const SERVER_COMMANDS = {
  refine: "hrm-lsp.refineFunction",
  generate: "hrm-lsp.generateFromComment",
  status: "hrm-lsp.status",
} as const;

/** Arguments of the refine/generate commands: one `{uri, line, character}` object. */
export function positionArguments(uri: string, line: number, character: number): [{ uri: string; line: number; character: number }] {
  return [{ uri, line, character }];
}

/** The model part of the status command's answer, if it has one. */
export function modelStatusOf(answer: unknown): { state: string; message: string } | undefined {
  if (typeof answer !== "object" || answer === null) {
    return undefined;
  }
  const model = (answer as { model?: unknown }).model;
  if (typeof model !== "object" || model === null) {
    return undefined;
  }
  const { state, message } = model as { state?: unknown; message?: unknown };
  return typeof state === "string" ? { state, message: typeof message === "string" ? message : "" } : undefined;
}
