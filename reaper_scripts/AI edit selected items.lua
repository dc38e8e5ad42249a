-- @description AI edit selected items
-- @version 0.3.1
-- @author aiedit
-- @about
--   # AI edit selected items
--   Text-prompted AI edit of the selected media items with the local aiedit engine.
--   One dialog: prompt, edit strengths η, mode, seed. Each selected item becomes one job;
--   if the time selection (or a razor edit) covers part of an item, only that part is regenerated.
--   Results come back as new takes (one per η) through the "AI edit jobs" window.
--   Needs the engine: `aiedit serve` (see docs/reaper.md). No extensions required.
-- @provides
--   [main] AI edit selected items.lua
--   [main] AI batch re-take.lua
--   [main] AI edit jobs.lua
--   [main] AI edit settings.lua
--   [nomain] aiedit/*.lua
-- @changelog
--   Jobs survive project tabs (closed tabs, File > Open in the same tab, upper-cased ext-state keys); results on
--   muted per-η tracks or silent lanes, by REAPER version (6, 7.08, 7.18+); razor areas per lane, one job per
--   area; apostrophes in remembered prompts; the wrong dialog field named in its caption; the engine's modes
--   (flowedit preview); each job's worker; trims before a render; unsaved projects wait for a file.

local dir = (select(2, reaper.get_action_context()):match("^(.*[/\\])") or "")
package.path = dir .. "?.lua;" .. dir .. "?/init.lua;" .. package.path
local lib = require("aiedit")

local TITLE = "AI edit selected items"

-- Snapshot the selection first: adding takes or rendering can change what is selected.
local function selected_items()
  local items = {}
  for i = 0, reaper.CountSelectedMediaItems(0) - 1 do items[#items + 1] = reaper.GetSelectedMediaItem(0, i) end
  return items
end

-- The dialog; remembers the last values. `modes`: what the engine's model offers. Returns params or nil.
local function ask_params(modes)
  local last_mode = lib.get_setting("last_mode")
  if not lib.parse_mode(last_mode, modes) then last_mode = modes[1] end -- e.g. zeta remembered, flow model now
  local defaults = { lib.get_setting("last_prompt"), lib.get_setting("last_etas"), last_mode,
                     lib.get_setting("last_seed") }
  local fields = {
    { name = "Prompt", check = function(s)
        s = lib.trim(s)
        if s == "" then return nil, "type a prompt" end
        if lib.text_length(s) > 1000 then return nil, "longer than 1000 characters" end
        return s
      end },
    { name = "η values", hint = "e.g. 0.3 0.5 0.7", check = function(s, v)
        return lib.parse_etas(s, lib.parse_mode(v[3], modes) or "lora")
      end },
    { name = "Mode", hint = table.concat(modes, " / "), check = function(s) return lib.parse_mode(s, modes) end },
    { name = "Seed", hint = "empty = random", check = function(s) return lib.parse_seed(s) end },
  }
  local p, v = lib.ask_fields(TITLE, fields, defaults, 320)
  if not p then return nil end
  lib.set_setting("last_prompt", p[1])
  lib.set_setting("last_etas", lib.trim(v[2]))
  lib.set_setting("last_mode", lib.trim(v[3]) ~= "" and lib.trim(v[3]) or "lora")
  lib.set_setting("last_seed", lib.trim(v[4]))
  return { prompt = p[1], etas = p[2], mode = p[3], seed = p[4], priority = "interactive" }
end

-- Razor edits win over the selection: the items they touch, each with its own range.
local function targets()
  local areas = lib.razor_areas(0)
  if areas then
    local items = {}
    for i = 0, reaper.CountMediaItems(0) - 1 do
      local it = reaper.GetMediaItem(0, i)
      if areas[it] then items[#items + 1] = it end
    end
    return items, areas
  end
  return selected_items(), nil
end

local function main()
  local items, areas = targets()
  if #items == 0 then
    reaper.ShowMessageBox("Select one or more audio items (or make a razor edit) first.", TITLE, 0)
    return
  end
  local spool = lib.spool_dir()
  if not lib.ensure_engine(spool) then return end
  local params = ask_params(lib.offered_modes(lib.engine_info(spool)))
  if not params then return end
  local ts, te = reaper.GetSet_LoopTimeRange(false, false, 0, 0, false)
  local ok_list, failed = lib.submit_items(items, function() return params end, spool, ts, te, areas)
  if #failed > 0 then reaper.ShowMessageBox(lib.summary(ok_list, failed), TITLE, 0) end
  if #ok_list > 0 then lib.open_jobs_window() end
end

main()
reaper.defer(function() end) -- no automatic undo point: this action does not change the project
