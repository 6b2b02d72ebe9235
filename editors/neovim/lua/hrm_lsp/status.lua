-- The model state for :HrmStatus and the statusline (loading / ready / error), fed by the
-- server's `$/progress` for loading the model (title "hrm-lsp", message "loading model X";
-- the end message says whether it loaded) and by the status command's answer.
local M = {}

local current = { state = "starting", message = "" }
local load_tokens = {}

function M.reset()
  current = { state = "starting", message = "" }
  load_tokens = {}
end

function M.set(state, message)
  current = { state = state, message = message or "" }
end

function M.get()
  return current
end

function M.line()
  if current.message ~= "" then
    return current.state .. " (" .. current.message .. ")"
  end
  return current.state
end

--- Whether a progress begin is the model load (other progress, e.g. refining, is not).
function M.is_model_progress(value)
  local text = ((value.title or "") .. " " .. (value.message or "")):lower()
  return text:find("loading model", 1, true) ~= nil or (value.title or ""):lower():find("model", 1, true) ~= nil
end

--- Whether a model load's end message reports a failure.
function M.is_failure(message)
  local m = (message or ""):lower()
  for _, word in ipairs({ "could not", "cannot", "failed", "error", "not found", "does not exist", "invalid", "corrupt" }) do
    if m:find(word, 1, true) then
      return true
    end
  end
  return false
end

--- Update the state from one `$/progress` value for `token`.
function M.on_progress(token, value)
  if type(value) ~= "table" then
    return
  end
  local key = tostring(token)
  if value.kind == "begin" and M.is_model_progress(value) then
    load_tokens[key] = true
    M.set("loading", value.message or value.title)
  elseif value.kind == "report" and load_tokens[key] then
    M.set("loading", value.message or current.message)
  elseif value.kind == "end" and load_tokens[key] then
    load_tokens[key] = nil
    if next(load_tokens) == nil then
      M.set(M.is_failure(value.message) and "error" or "ready", value.message)
    end
  end
end

--- `$/progress` handler: track the model state, then let Neovim's own handler run
--- (it feeds vim.lsp.status()/LspProgress and statusline plugins).
function M.progress_handler(err, result, ctx, cfg)
  if result then
    M.on_progress(result.token, result.value)
  end
  local default = vim.lsp.handlers["$/progress"]
  if default then
    return default(err, result, ctx, cfg)
  end
end

return M
