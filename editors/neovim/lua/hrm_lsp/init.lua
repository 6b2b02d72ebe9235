-- hrm-lsp for Neovim: starts `hrm-lsp serve` for Go buffers through Neovim's built-in LSP
-- client, whichever API this Neovim has (detected, never from version strings):
--   vim.lsp.config + vim.lsp.enable          (0.11+)
--   vim.lsp.start from a FileType autocmd    (0.8-0.10)
--   vim.lsp.start_client + buf_attach_client (0.7)
-- Completion goes through the standard LSP path (omnifunc, nvim-cmp, blink.cmp);
-- inline completion (ghost text) is enabled where vim.lsp.inline_completion exists.
local config = require("hrm_lsp.config")
local server = require("hrm_lsp.server")
local status = require("hrm_lsp.status")

local M = {}

-- Module state survives repeated setup() calls (setup is idempotent).
local state = {
  opts = nil, -- merged options of the last setup()
  clients = {}, -- 0.7 path: root dir -> client id
  api = nil, -- which API this Neovim offers: "config" | "start" | "start_client"
}

local AUGROUP = "hrm_lsp"

local function notify(msg, level)
  vim.schedule(function()
    vim.notify(msg, level or vim.log.levels.INFO)
  end)
end

local function get_clients(filter)
  if vim.lsp.get_clients then
    return vim.lsp.get_clients(filter)
  end
  local out = {}
  for _, c in pairs(vim.lsp.get_active_clients()) do
    if (filter.name == nil or c.name == filter.name)
      and (filter.bufnr == nil or vim.lsp.buf_is_attached(filter.bufnr, c.id)) then
      table.insert(out, c)
    end
  end
  return out
end

--- The client API in use (after setup), else the one this Neovim has.
function M.api()
  return state.api or M.detect_api()
end

--- Which client API this Neovim has (detected by feature, not version).
function M.detect_api()
  if type(vim.lsp.config) ~= "nil" and type(vim.lsp.enable) == "function" then
    return "config"
  elseif type(vim.lsp.start) == "function" then
    return "start"
  end
  return "start_client"
end

local function on_attach(client, bufnr)
  local opts = state.opts
  if opts.omnifunc then
    vim.bo[bufnr].omnifunc = "v:lua.vim.lsp.omnifunc"
  end
  local inline = vim.lsp.inline_completion
  if opts.inline_completion and type(inline) == "table" and type(inline.enable) == "function" then
    pcall(inline.enable, true, { bufnr = bufnr })
  end
  if opts.on_attach then
    opts.on_attach(client, bufnr)
  end
end

--- The client configuration for `root` (shared by all three APIs).
local function client_config(opts, cmd, settings, root)
  local capabilities = vim.lsp.protocol.make_client_capabilities()
  if opts.capabilities then
    capabilities = vim.tbl_deep_extend("force", capabilities, opts.capabilities)
  end
  return {
    name = opts.name,
    cmd = cmd,
    root_dir = root,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    init_options = config.as_object(vim.deepcopy(settings)),
    -- Neovim answers workspace/configuration by looking the section up in `settings`.
    settings = { [config.SECTION] = config.with_nulls(settings) },
    capabilities = capabilities,
    handlers = { ["$/progress"] = status.progress_handler },
    on_attach = on_attach,
  }
end

local function is_target(bufnr)
  return vim.tbl_contains(state.opts.filetypes, vim.bo[bufnr].filetype) and vim.bo[bufnr].buftype == ""
end

--- Attach `bufnr` through vim.lsp.start (0.8-0.10) or start_client (0.7).
local function attach_buffer(bufnr, cmd, settings)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local root = server.root_dir(name ~= "" and name or vim.fn.getcwd() .. "/x", state.opts.root_markers)
  local cfg = client_config(state.opts, cmd, settings, root)
  if state.api == "start" then
    vim.lsp.start(cfg, { bufnr = bufnr })
    return
  end
  local id = state.clients[root]
  local client = id and vim.lsp.get_client_by_id(id)
  if client == nil or client.is_stopped() then
    id = vim.lsp.start_client(cfg)
    state.clients[root] = id
  end
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
end

--- Set up the client; calling it again replaces the options (running servers get the new
--- settings through workspace/didChangeConfiguration) without starting a second client.
function M.setup(opts)
  local merged = config.merge(opts)
  local settings, warnings = config.check_settings(merged.settings)
  for _, w in ipairs(warnings) do
    notify(w, vim.log.levels.WARN)
  end
  local cmd, err = server.command(merged)
  state.opts = merged
  state.api = merged.client_api == "auto" and M.detect_api() or merged.client_api
  local available = { config = vim.lsp.config ~= nil and vim.lsp.enable ~= nil, start = vim.lsp.start ~= nil,
    start_client = vim.lsp.start_client ~= nil }
  if not available[state.api] then
    local msg = ("hrm_lsp: client_api = %q is not available in this Neovim; use \"auto\""):format(state.api)
    status.set("error", msg)
    notify(msg, vim.log.levels.ERROR)
    return false
  end
  local running = get_clients({ name = merged.name })
  if #running == 0 then
    status.reset() -- a running server keeps its model state across setup() calls
  end
  if cmd == nil then
    status.set("error", err)
    notify(err, vim.log.levels.ERROR)
    return false
  end

  -- Already running clients (an earlier setup): push the new settings.
  for _, client in ipairs(running) do
    local fresh = { [config.SECTION] = config.with_nulls(settings) }
    -- Neovim answers workspace/configuration from client.settings (0.10+) or
    -- client.config.settings (before); keep both current.
    client.config.settings = fresh
    if client.settings ~= nil then
      client.settings = fresh
    end
    M._notify(client, "workspace/didChangeConfiguration", { settings = fresh })
  end

  local group = vim.api.nvim_create_augroup(AUGROUP, { clear = true })
  if state.api == "config" then
    local cfg = client_config(merged, cmd, settings, nil)
    cfg.root_dir = nil -- 0.11 finds it from root_markers
    vim.lsp.config(merged.name, cfg)
    vim.lsp.enable(merged.name)
  else
    vim.api.nvim_create_autocmd("FileType", {
      group = group,
      pattern = merged.filetypes,
      callback = function(args)
        if is_target(args.buf) then
          attach_buffer(args.buf, cmd, settings)
        end
      end,
    })
    -- Buffers opened before setup() ran.
    for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_is_loaded(bufnr) and is_target(bufnr) then
        attach_buffer(bufnr, cmd, settings)
      end
    end
  end
  return true
end

--- The hrm-lsp client attached to `bufnr` (default: current buffer), or nil.
function M.client(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local name = state.opts and state.opts.name or config.defaults.name
  return get_clients({ name = name, bufnr = bufnr })[1]
end

-- Client methods are called with `:` on 0.11+ (methods on a metatable) and `.` before
-- (closures on the client table); detect which.
local function has_methods(client)
  local mt = getmetatable(client)
  return mt ~= nil and type(mt.__index) == "table" and type(mt.__index.request) == "function"
end

local function request(client, method, params, handler, bufnr)
  if has_methods(client) then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

local function client_notify(client, method, params)
  if has_methods(client) then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

M._notify = client_notify

local function apply_edit(edit, client)
  vim.lsp.util.apply_workspace_edit(edit, client.offset_encoding or "utf-16")
end

--- "Refine this function" at the cursor, through the code action the server offers.
--- `done(ok, message)` is called when finished (optional; for scripts and tests).
function M.refine(done)
  done = done or function(ok, message)
    if message then
      notify(message, ok and vim.log.levels.INFO or vim.log.levels.WARN)
    end
  end
  local bufnr = vim.api.nvim_get_current_buf()
  local client = M.client(bufnr)
  if client == nil then
    return done(false, "hrm_lsp: no hrm-lsp client is attached to this buffer (:HrmStatus)")
  end
  local params = vim.lsp.util.make_range_params(0, client.offset_encoding or "utf-16")
  params.context = { diagnostics = {}, triggerKind = 1 }
  request(client, "textDocument/codeAction", params, function(err, actions)
    if err then
      return done(false, "hrm_lsp: code action request failed: " .. tostring(err.message or err))
    end
    local action
    for _, a in ipairs(actions or {}) do
      if a.title == "Refine this function" then
        action = a
      end
    end
    if action == nil then
      return done(false, "hrm_lsp: Refine this function does not apply here; put the cursor inside a function")
    end
    local function finish(resolved)
      if resolved.edit then
        apply_edit(resolved.edit, client)
      end
      local command = type(resolved.command) == "table" and resolved.command or nil
      if command then
        request(client, "workspace/executeCommand", command, function(cerr, result)
          if cerr then
            return done(false, "hrm_lsp: refine failed: " .. tostring(cerr.message or cerr))
          end
          done(result ~= nil and result ~= vim.NIL, result == nil and "hrm_lsp: no change" or nil)
        end, bufnr)
      else
        done(resolved.edit ~= nil, resolved.edit == nil and "hrm_lsp: no change" or nil)
      end
    end
    if action.edit == nil and action.command == nil and action.data ~= nil then
      request(client, "codeAction/resolve", action, function(rerr, resolved)
        if rerr then
          return done(false, "hrm_lsp: refine failed: " .. tostring(rerr.message or rerr))
        end
        finish(resolved or action)
      end, bufnr)
    else
      finish(action)
    end
  end, bufnr)
end

--- Ask the server for its status; `done(result_or_nil, err)`.
function M.server_status(done)
  local client = M.client(0)
  if client == nil then
    return done(nil, "no hrm-lsp client attached to this buffer")
  end
  request(client, "workspace/executeCommand", { command = "hrm-lsp.status", arguments = {} }, function(err, result)
    done(result, err and tostring(err.message or err) or nil)
  end, vim.api.nvim_get_current_buf())
end

--- Print the model state and where the server runs (:HrmStatus).
function M.print_status()
  local lines = { "hrm-lsp: " .. status.line(), "client API: " .. M.api() }
  M.server_status(function(result, err)
    if result and type(result.model) == "table" then
      status.set(result.model.state == "failed" and "error" or result.model.state, result.model.message)
      table.insert(lines, ("model: %s %s"):format(result.model.state, result.model.path or ""))
      if result.model.message and result.model.message ~= "" then
        table.insert(lines, "  " .. result.model.message)
      end
      table.insert(lines, "server version: " .. tostring(result.version))
      table.insert(lines, "position encoding: " .. tostring(result.positionEncoding))
    else
      table.insert(lines, "server: " .. tostring(err))
    end
    table.insert(lines, "server log: " .. (state.opts and state.opts.log_file or vim.lsp.get_log_path()))
    vim.schedule(function()
      vim.api.nvim_echo({ { table.concat(lines, "\n") } }, true, {})
    end)
  end)
end

--- A short status for the statusline, e.g. "HRGC: ready".
function M.statusline()
  return "HRGC: " .. status.get().state
end

return M
