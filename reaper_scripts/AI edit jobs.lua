-- @description AI edit jobs
-- @version 0.1.0
-- @author aiedit
-- @noindex
-- @about
--   A small window with one row per AI edit job: item, stage, progress, state, and Cancel.
--   Finished jobs are imported as new takes while it runs. Esc closes it; jobs keep running in
--   the engine and are imported the next time the window opens (even after a REAPER restart).
--   Installed by the "AI edit selected items" package.

local lib = dofile((select(2, reaper.get_action_context()):match("^(.*[/\\])") or "") .. "aiedit_lib.lua")

if not lib.run_jobs_window() then
  reaper.ShowConsoleMsg("[aiedit] the jobs window is already open\n")
end
