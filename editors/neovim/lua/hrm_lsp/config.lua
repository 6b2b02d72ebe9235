-- Options of the hrm-lsp Neovim client: defaults, merging with the user's, validation.
-- Pure data and functions (no side effects), so setup() can be called again safely.
local M = {}

-- The server's settings section (hrm_lsp/server/settings.py answers workspace/configuration
-- for it) and its camelCase keys, with the Lua type each must have.
M.SECTION = "hrmLsp"
M.SERVER_SETTINGS = {
  modelPath = "string",
  device = "string",
  maxTokens = "number",
  maxTokensMultiline = "number",
  temperature = "number",
  topP = "number",
  inlineMode = "string",
  refine = "boolean",
  maxRefinementIterations = "number",
  refinementThreshold = "number",
  validators = "table",
  goPath = "string",
  debounceMs = "number",
  timeBudgetMs = "number",
  maxContextChars = "number",
  completionSources = "string",
  minConfidence = "number",
}

M.defaults = {
  -- Client name; one client per workspace root.
  name = "hrm_lsp",
  -- Command that starts the server. nil: find `hrm-lsp` (active Python environment, then
  -- PATH) and run `hrm-lsp serve`.
  cmd = nil,
  -- Extra arguments after `serve`, e.g. { "--log-level", "INFO" }.
  extra_args = {},
  -- Write the server's log to this file (`--log-file`); nil: the log goes to stderr, which
  -- Neovim writes to its own LSP log (:lua vim.cmd.edit(vim.lsp.get_log_path())).
  log_file = nil,
  filetypes = { "go" },
  -- Files that mark a workspace root, searched upward from the buffer.
  root_markers = { "go.work", "go.mod", ".git" },
  -- Server settings (camelCase, see :help hrm-lsp-settings). Unset keys take the server's
  -- defaults. Sent as initializationOptions and as the answer to workspace/configuration.
  settings = {},
  -- Set 'omnifunc' to the LSP omnifunc in attached buffers (<C-x><C-o>).
  omnifunc = true,
  -- Ghost-text inline completion where Neovim has it (vim.lsp.inline_completion, 0.12+).
  inline_completion = true,
  -- Extra client capabilities merged into Neovim's (e.g. from cmp_nvim_lsp or blink.cmp).
  capabilities = nil,
  -- Called as on_attach(client, bufnr) after the plugin's own attach work.
  on_attach = nil,
  -- Which client API to use: "auto" (detected), or force "config" (0.11+), "start"
  -- (0.8+) or "start_client" (0.7+), e.g. to keep vim.lsp.config free of this client.
  client_api = "auto",
}

local function is_list(t)
  if vim.islist then
    return vim.islist(t)
  end
  return vim.tbl_islist(t)
end

--- Check the user's server settings; returns (clean_settings, warnings).
--- Unknown keys and wrong types are dropped with a warning naming the key.
function M.check_settings(settings)
  local clean, warnings = {}, {}
  if settings == nil then
    return clean, warnings
  end
  if type(settings) ~= "table" then
    return clean, { "hrm_lsp: settings must be a table, got " .. type(settings) }
  end
  for key, value in pairs(settings) do
    local want = M.SERVER_SETTINGS[key]
    if want == nil then
      table.insert(warnings, ("hrm_lsp: unknown setting %q ignored"):format(tostring(key)))
    elseif type(value) ~= want or (want == "table" and not is_list(value)) then
      table.insert(warnings, ("hrm_lsp: setting %s should be %s, got %s; using the server's default"):format(
        key, want == "table" and "a list" or want, vim.inspect(value)))
    else
      clean[key] = value
    end
  end
  return clean, warnings
end

--- Settings as a JSON object: an empty Lua table would be encoded as a JSON array `[]`,
--- which the server rejects, so the empty case is vim.empty_dict().
function M.as_object(settings)
  if next(settings) == nil then
    return vim.empty_dict()
  end
  return settings
end

--- The settings as an answer to workspace/configuration: every server key, unset ones as
--- JSON null (the server's "back to the default"), so a key removed by a later setup()
--- stops applying without a restart.
function M.with_nulls(settings)
  local out = vim.deepcopy(settings)
  for key in pairs(M.SERVER_SETTINGS) do
    if out[key] == nil then
      out[key] = vim.NIL
    end
  end
  return out
end

--- Defaults merged with `opts` (deep for tables that are maps, replaced for lists).
function M.merge(opts)
  opts = opts or {}
  vim.validate({
    opts = { opts, "table" },
    cmd = { opts.cmd, "table", true },
    extra_args = { opts.extra_args, "table", true },
    log_file = { opts.log_file, "string", true },
    filetypes = { opts.filetypes, "table", true },
    root_markers = { opts.root_markers, "table", true },
    settings = { opts.settings, "table", true },
    omnifunc = { opts.omnifunc, "boolean", true },
    inline_completion = { opts.inline_completion, "boolean", true },
    capabilities = { opts.capabilities, "table", true },
    on_attach = { opts.on_attach, "function", true },
    client_api = { opts.client_api, function(v)
      return v == nil or v == "auto" or v == "config" or v == "start" or v == "start_client"
    end, '"auto", "config", "start" or "start_client"' },
  })
  local merged = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace, never merge element-wise.
  for _, key in ipairs({ "cmd", "extra_args", "filetypes", "root_markers" }) do
    if opts[key] ~= nil then
      merged[key] = vim.deepcopy(opts[key])
    end
  end
  return merged
end

return M
