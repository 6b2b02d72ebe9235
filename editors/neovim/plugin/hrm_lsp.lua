-- Commands of the hrm-lsp client. Nothing starts until require("hrm_lsp").setup{} is called.
if vim.g.loaded_hrm_lsp then
  return
end
vim.g.loaded_hrm_lsp = true

vim.api.nvim_create_user_command("HrmRefine", function()
  require("hrm_lsp").refine()
end, { desc = "hrm-lsp: Refine this function (the function at the cursor)" })

vim.api.nvim_create_user_command("HrmStatus", function()
  require("hrm_lsp").print_status()
end, { desc = "hrm-lsp: model state, server version and log location" })
