-- @description AI batch re-take
-- @version 0.4.2
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

-- Does the item sound in the mix? Not when it, or its track, is muted, nor in a fixed lane that does not play
-- (the AI result tracks and lanes are such): a whole-project batch leaves those alone.
local function plays(item)
  if reaper.GetMediaItemInfo_Value(item, "B_MUTE") ~= 0 then return false end
  local tr = reaper.GetMediaItemTrack(item)
  if reaper.GetMediaTrackInfo_Value(tr, "B_MUTE") ~= 0 then return false end
  if reaper.GetMediaTrackInfo_Value(tr, "I_FREEMODE") == 2 then
    local lane = math.floor(reaper.GetMediaItemInfo_Value(item, "I_FIXEDLANE") + 0.5)
    if reaper.GetMediaTrackInfo_Value(tr, "C_LANEPLAYS:" .. lane) == 0 then return false end
  end
  return true
end

-- The items of the scope, and how many of the project were left out because they do not play.
local function collect(scope)
  local items, silent = {}, 0
  if scope == "selected items" then
    for i = 0, reaper.CountSelectedMediaItems(0) - 1 do items[#items + 1] = reaper.GetSelectedMediaItem(0, i) end
  elseif scope == "selected tracks" then
    for t = 0, reaper.CountSelectedTracks(0) - 1 do
      local tr = reaper.GetSelectedTrack(0, t)
      for i = 0, reaper.CountTrackMediaItems(tr) - 1 do items[#items + 1] = reaper.GetTrackMediaItem(tr, i) end
    end
  else
    for i = 0, reaper.CountMediaItems(0) - 1 do
      local it = reaper.GetMediaItem(0, i)
      if plays(it) then items[#items + 1] = it else silent = silent + 1 end
    end
  end
  return items, silent
end

-- A listed model by name (any case) or label; empty = the default (the first).
local function parse_model(s, models)
  s = lib.trim(s):lower()
  if s == "" then return models[1] end
  for _, m in ipairs(models) do
    if m.name:lower() == s or lib.model_label(m):lower() == s then return m end
  end
  local names = {}
  for _, m in ipairs(models) do names[#names + 1] = m.name end
  return nil, "one of " .. table.concat(names, " / ")
end

local function ask(info, proj)
  local models = lib.models(info)
  local model = lib.pick_model(models, lib.last_model(proj))
  local modes = lib.model_modes(info, model)
  local last_mode = lib.get_setting("last_mode")
  if not lib.parse_mode(last_mode, modes) then last_mode = modes[1] end
  -- the model's strengths for that mode (the user's own for that model and mode, else its defaults); an older
  -- daemon gives none: the one remembered "last_etas"
  local etas = lib.etas_for(model, lib.parse_mode(last_mode, modes)) or lib.get_setting("last_etas")
  local defaults = { lib.get_setting("last_prompt"), etas, last_mode,
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
  if #models > 0 then
    local names = {}
    for _, m in ipairs(models) do names[#names + 1] = lib.model_label(m) end
    fields[7] = { name = "Model", hint = table.concat(names, " / "), check = function(s)
        return parse_model(s, models)
      end }
    defaults[7] = model.name
    local function modes_of(v) return lib.model_modes(info, parse_model(v[7] or "", models) or model) end
    fields[3].check = function(s, v) return lib.parse_mode(s, modes_of(v)) end
    fields[2].check = function(s, v) return lib.parse_etas(s, lib.parse_mode(v[3], modes_of(v)) or "lora") end
    fields[2].refill = lib.etas_refill(function(v) return parse_model(v[7] or "", models) or model,
                                         lib.parse_mode(v[3], modes_of(v)) end, model,
                                       lib.parse_mode(last_mode, modes), etas)
  end
  local p, v = lib.ask_fields(TITLE, fields, defaults, 320)
  if not p then return nil end
  lib.set_setting("last_prompt", p[1])
  lib.set_setting("last_etas", lib.trim(v[2]))
  lib.remember_etas(p[7], p[3], v[2])
  lib.set_setting("last_mode", lib.trim(v[3]) ~= "" and lib.trim(v[3]) or "lora")
  lib.set_setting("last_seed", lib.trim(v[4]))
  lib.set_setting("last_scope", p[5])
  lib.set_setting("last_use_notes", p[6])
  if p[7] then lib.remember_model(proj, p[7].name) end
  return { prompt = p[1], etas = p[2], mode = p[3], seed = p[4], scope = p[5], use_notes = p[6] == "yes",
           model = p[7] and p[7].name or nil }
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
    local params = { prompt = prompt, etas = opts.etas, mode = opts.mode, seed = opts.seed, priority = "batch",
                     model = opts.model }
    params.extra = lib.job_extra(params, item) -- the model, and the project's tempo at the item
    return params
  end
end

local function main()
  local spool = lib.spool_dir()
  local opts = ask(lib.engine_info(spool), reaper.EnumProjects(-1, ""))
  if not opts then return end
  local items, silent = collect(opts.scope)
  if #items == 0 then
    reaper.ShowMessageBox("No items in: " .. opts.scope .. ".", TITLE, 0)
    return
  end
  if not lib.confirm_many(#items, TITLE) then return end
  if not lib.ensure_engine(spool) then return end
  local ok_list, failed = lib.submit_items(items, params_for(opts), spool, nil, nil)
  local summary = lib.summary(ok_list, failed)
  if silent > 0 then
    summary = summary .. string.format("\n\n%d muted or silent item%s (muted, on a muted track or in a lane that " ..
      "does not play, such as AI results) left alone.", silent, silent == 1 and "" or "s")
  end
  reaper.ShowMessageBox(summary, TITLE, 0)
  if #ok_list > 0 then lib.open_jobs_window() end
end

main()
reaper.defer(function() end) -- no automatic undo point: this action does not change the project
