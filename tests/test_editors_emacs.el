;;; Driver for tests/test_editors_emacs.py: load the README's eglot snippet (as written to
;;; $HRM_TEST_SNIPPET), open a Go file, connect, and print the server's status as JSON
;;; once the workspace configuration has arrived. The assertions are in Python.
(package-initialize)
(require 'eglot)
(unless (fboundp 'go-mode)
  ;; Emacs 28 has no Go mode of its own; eglot only needs the major mode's name.
  (define-derived-mode go-mode prog-mode "Go"))
(add-to-list 'auto-mode-alist '("\\.go\\'" . go-mode))
(load (getenv "HRM_TEST_SNIPPET") nil t)
(find-file (getenv "HRM_TEST_FILE"))
(eglot-ensure)
(run-hooks 'post-command-hook) ; batch mode runs no commands, which is when eglot-ensure connects
(let ((deadline (+ (float-time) 60)))
  (while (and (not (eglot-current-server)) (< (float-time) deadline))
    (accept-process-output nil 0.1)))
(let* ((server (or (eglot-current-server) (error "eglot did not connect")))
       (deadline (+ (float-time) 60))
       status)
  ;; The server pulls workspace/configuration after `initialized'; poll until it shows.
  (while (progn
           (setq status (jsonrpc-request server :workspace/executeCommand
                                         '(:command "hrm-lsp.status" :arguments [])))
           (and (equal (plist-get (plist-get status :settings) :inline_mode) "auto")
                (< (float-time) deadline)))
    (accept-process-output nil 0.1))
  (princ (format "RESULT %s\n" (json-encode status))))
(kill-emacs 0)
