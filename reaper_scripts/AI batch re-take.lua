-- @description AI batch re-take
-- @version 0.3.1
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

local function ask(modes)
  local last_mode = lib.get_setting("last_mode")
  if not lib.parse_mode(last_mode, modes) then last_mode = modes[1] end
  local defaults = { lib.get_setting("last_prompt"), lib.get_setting("last_etas"), last_mode,
                     lib.get_setting("last_seed"), lib.get_setting("last_scope"), lib.get_setting("last_use_notes") }
  local fields = {
    { name = "Prompt", hint = "default", check = function(s)
        s = lib.trim(s)
        if lib.text_length(s) > 1000 then return nil, "longer than 1000 characters" end
        return s
      end },
    { name = "η values", check = function(s, v) return lib.parse_etas(s, lib.parse_mode(v[3], modes) or "lora") end },
    { name = "Mode", hint = table.concat(modes, " / "), check = function(s) return lib.parse_mode(s, modes) end },
    { name = "Seed", hint = "empty = random", check = function(s) return lib.parse_seed(s) end },
    { name = "Items", hint = "selected items / selected tracks / project", check = function(s)
        local scope = parse_scope(s)
        if not scope then return nil, "selected items / selected tracks / project" end
        return scope
      end },
    { name = "Use item notes as prompt", hint = "yes/no", check = function(s)
        return lib.is_yes(s) and "yes" or "no"
      end },
  }
  local p, v = lib.ask_fields(TITLE, fields, defaults, 320)
  if not p then return nil end
  lib.set_setting("last_prompt", p[1])
  lib.set_setting("last_etas", lib.trim(v[2]))
  lib.set_setting("last_mode", lib.trim(v[3]) ~= "" and lib.trim(v[3]) or "lora")
  lib.set_setting("last_seed", lib.trim(v[4]))
  lib.set_setting("last_scope", p[5])
  lib.set_setting("last_use_notes", p[6])
  return { prompt = p[1], etas = p[2], mode = p[3], seed = p[4], scope = p[5], use_notes = p[6] == "yes" }
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
    if lib.text_length(prompt) > 1000 then return nil, "prompt longer than 1000 characters" end
    return { prompt = prompt, etas = opts.etas, mode = opts.mode, seed = opts.seed, priority = "batch" }
  end
end

local function main()
  local spool = lib.spool_dir()
  local opts = ask(lib.offered_modes(lib.engine_info(spool)))
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
