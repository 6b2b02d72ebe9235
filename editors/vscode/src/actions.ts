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
