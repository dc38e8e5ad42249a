-- @description AI edit jobs
-- @version 0.4.2
-- @author aiedit
-- @noindex
-- @about
--   A small window with one row per AI edit job: item, stage, progress, state, and Cancel.
--   Finished jobs are imported as new takes while it runs. Esc (or running the action again) closes
--   it; jobs keep running in the engine and are imported the next time the window opens with their
--   project loaded (even after a REAPER restart).
--   Installed by the "AI edit selected items" package.

local dir = (select(2, reaper.get_action_context()):match("^(.*[/\\])") or "")
package.path = dir .. "?.lua;" .. dir .. "?/init.lua;" .. package.path
local lib = require("aiedit")

-- A toggle: running the action again while the window is open closes it (see run_jobs_window).
lib.run_jobs_window()
