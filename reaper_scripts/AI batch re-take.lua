-- @description AI batch re-take
-- @version 0.2.0
-- @author aiedit
-- @noindex
-- @about
--   Queues the same AI edit for many items: the selected items, every item on the selected
--   tracks, or the whole project. Optionally each item's notes are its prompt. Batch jobs run
--   after interactive ones. Items that cannot be sent are listed; the rest are queued.
--   Batch edits are whole-item edits (the time selection is ignored).
--   Installed by the "AI edit selected items" package.

local dir = (select(2, reaper.get_action_context()):match("^(.*[/\\])") or "")
package.path = dir .. "?.lua;" .. dir .. "?/init.lua;" .. package.path
local lib = require("aiedit")

local TITLE = "AI batch re-take"

local function parse_scope(s)
  s = lib.trim(s):lower()
  if s == "" or s:find("^sel.*item") or s == "items" then return "selected items" end
  if s:find("track") then return "selected tracks" end
  if s:find("project") or s == "all" then return "project" end
  return nil
end

local function collect(scope)
  local items = {}
  if scope == "selected items" then
    for i = 0, reaper.CountSelectedMediaItems(0) - 1 do items[#items + 1] = reaper.GetSelectedMediaItem(0, i) end
  elseif scope == "selected tracks" then
    for t = 0, reaper.CountSelectedTracks(0) - 1 do
      local tr = reaper.GetSelectedTrack(0, t)
      for i = 0, reaper.CountTrackMediaItems(tr) - 1 do items[#items + 1] = reaper.GetTrackMediaItem(tr, i) end
    end
  else
    for i = 0, reaper.CountMediaItems(0) - 1 do items[#items + 1] = reaper.GetMediaItem(0, i) end
  end
  return items
end

local function ask()
  local defaults = { lib.get_setting("last_prompt"), lib.get_setting("last_etas"), lib.get_setting("last_mode"),
                     lib.get_setting("last_seed"), lib.get_setting("last_scope"), lib.get_setting("last_use_notes") }
  while true do
    local v = lib.user_inputs(TITLE, { "Prompt (default)", "η values", "Mode (lora / full / zeta / sdedit)",
      "Seed (empty = random)", "Items (selected items / selected tracks / project)",
      "Use item notes as prompt (yes/no)" }, defaults, 320)
    if not v then return nil end
    defaults = v
    local mode = lib.parse_mode(v[3])
    local etas, eerr = lib.parse_etas(v[2], mode)
    local seed, serr = lib.parse_seed(v[4])
    local scope = parse_scope(v[5])
    local err = (not mode and "Mode must be lora, full, zeta (preview) or sdedit.") or eerr or serr
      or (not scope and "Items must be: selected items, selected tracks or project.")
    if not err then
      lib.set_setting("last_prompt", lib.trim(v[1]))
      lib.set_setting("last_etas", lib.trim(v[2]))
      lib.set_setting("last_mode", lib.trim(v[3]) ~= "" and lib.trim(v[3]) or "lora")
      lib.set_setting("last_seed", lib.trim(v[4]))
      lib.set_setting("last_scope", scope)
      lib.set_setting("last_use_notes", lib.is_yes(v[6]) and "yes" or "no")
      return { prompt = lib.trim(v[1]), etas = etas, mode = mode, seed = seed, scope = scope,
               use_notes = lib.is_yes(v[6]) }
    end
    reaper.ShowMessageBox(err, TITLE, 0)
  end
end

-- The item's prompt: its notes (when asked for and not empty), else the dialog's prompt.
local function params_for(opts)
  return function(item)
    local prompt = opts.prompt
    if opts.use_notes then
      local _, notes = reaper.GetSetMediaItemInfo_String(item, "P_NOTES", "", false)
      notes = lib.trim((notes or ""):gsub("[\r\n]+", " "))
      if notes ~= "" then prompt = notes end
    end
    if prompt == "" then return nil, "no prompt (empty notes and no default prompt)" end
    if #prompt > 1000 then return nil, "prompt longer than 1000 characters" end
    return { prompt = prompt, etas = opts.etas, mode = opts.mode, seed = opts.seed, priority = "batch" }
  end
end

local function main()
  local spool = lib.spool_dir()
  local opts = ask()
  if not opts then return end
  local items = collect(opts.scope)
  if #items == 0 then
    reaper.ShowMessageBox("No items in: " .. opts.scope .. ".", TITLE, 0)
    return
  end
  if not lib.ensure_engine(spool) then return end
  local ok_list, failed = lib.submit_items(items, params_for(opts), spool, nil, nil)
  reaper.ShowMessageBox(lib.summary(ok_list, failed), TITLE, 0)
  if #ok_list > 0 then lib.open_jobs_window() end
end

main()
reaper.defer(function() end) -- no automatic undo point: this action does not change the project
