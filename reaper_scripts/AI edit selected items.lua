-- @description AI edit selected items
-- @version 0.4.2
-- @author aiedit
-- @about
--   # AI edit selected items
--   Text-prompted AI edit of the selected media items with the local aiedit engine.
--   One dialog: prompt, how much to change, the kind of edit, the model, seed (on ReaImGui when
--   it is installed, else a plain dialog). Each selected item becomes one job;
--   if the time selection (or a razor edit) covers part of an item, only that part is regenerated.
--   Results come back as new takes (one per η) through the "AI edit jobs" window.
--   Needs the engine: `aiedit serve` (see docs/reaper.md). ReaImGui (ReaTeam Extensions) is
--   recommended for the jobs window (play, compare, keep takes) and the dialog; not required.
-- @provides
--   [main] AI edit selected items.lua
--   [main] AI batch re-take.lua
--   [main] AI edit jobs.lua
--   [main] AI edit settings.lua
--   [nomain] aiedit/*.lua
-- @changelog
--   A jobs window on ReaImGui (play, A/B against the original, keep one take; scores and spectrograms); a
--   dialog in plain words with the engine's models and the project's tempo; refused or vanished jobs end with
--   their reason. On Windows the default spool is the engine's own, also for user names outside ASCII; the
--   engine command is quoted for Windows and macOS/Linux (paths with spaces). The dialogs start from the chosen
--   model's own strengths for the chosen kind of edit (Stable Audio 3's preview 0.75/0.85/0.95), with presets
--   around them, and remember your numbers per model and kind of edit.

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

-- Parses the Model field: a listed model's name (any case) or its label; empty = the default (the first).
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

-- The GetUserInputs dialog (without ReaImGui); remembers the last values. Returns params or nil.
local function ask_params(info, proj)
  local models = lib.models(info)
  local model = lib.pick_model(models, lib.last_model(proj))
  local modes = lib.model_modes(info, model)
  local last_mode = lib.get_setting("last_mode")
  if not lib.parse_mode(last_mode, modes) then last_mode = modes[1] end -- e.g. zeta remembered, flow model now
  -- the model's strengths for that mode (the user's own for that model and mode, else its defaults); an older
  -- daemon gives none: the one remembered "last_etas"
  local etas = lib.etas_for(model, lib.parse_mode(last_mode, modes)) or lib.get_setting("last_etas")
  local defaults = { lib.prompt_history(proj)[1] or lib.get_setting("last_prompt"), etas, last_mode,
                     lib.get_setting("last_seed") }
  local function chosen(v) return #models > 0 and (parse_model(v[5] or "", models) or model) or nil end
  local function modes_of(v) return lib.model_modes(info, chosen(v)) end
  local fields = {
    { name = "Prompt", check = function(s)
        s = lib.trim(s)
        if s == "" then return nil, "type a prompt" end
        if lib.text_length(s) > 1000 then return nil, "longer than 1000 characters" end
        return s
      end },
    { name = "η values", hint = "e.g. 0.3 0.5 0.7", check = function(s, v)
        return lib.parse_etas(s, lib.parse_mode(v[3], modes_of(v)) or "lora")
      end, refill = lib.etas_refill(function(v) return chosen(v), lib.parse_mode(v[3], modes_of(v)) end, model,
                                    lib.parse_mode(last_mode, modes), etas) },
    { name = "Mode", hint = table.concat(modes, " / "), check = function(s, v)
        return lib.parse_mode(s, modes_of(v))
      end },
    { name = "Seed", hint = "empty = random", check = function(s) return lib.parse_seed(s) end },
  }
  local lyrics = false
  if #models > 0 then
    local names = {}
    for _, m in ipairs(models) do
      names[#names + 1] = lib.model_label(m)
      lyrics = lyrics or m.takes.lyrics == true
    end
    fields[5] = { name = "Model", hint = table.concat(names, " / "), check = function(s)
        return parse_model(s, models)
      end }
    defaults[5] = model.name
    if lyrics then
      fields[6] = { name = "Lyrics", hint = "music models only", check = function(s)
          return lib.check_text_field("lyrics", s)
        end }
      defaults[6] = ""
    end
  end
  local p, v = lib.ask_fields(TITLE, fields, defaults, 320)
  if not p then return nil end
  lib.set_setting("last_prompt", p[1])
  lib.set_setting("last_etas", lib.trim(v[2]))
  lib.remember_etas(p[5], p[3], v[2])
  lib.set_setting("last_mode", lib.trim(v[3]) ~= "" and lib.trim(v[3]) or "lora")
  lib.set_setting("last_seed", lib.trim(v[4]))
  local params = { prompt = p[1], etas = p[2], mode = p[3], seed = p[4], priority = "interactive", music = {} }
  if p[5] then
    params.model = p[5].name
    if p[6] and p[6] ~= "" and p[5].takes.lyrics then params.music.lyrics = p[6] end
  end
  return params
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
  if not lib.confirm_many(lib.count_jobs(items, areas), TITLE) then return end
  local spool = lib.spool_dir()
  if not lib.ensure_engine(spool) then return end
  local info = lib.engine_info(spool)
  local proj = reaper.EnumProjects(-1, "")
  local ts, te = reaper.GetSet_LoopTimeRange(false, false, 0, 0, false)
  local function go(params)
    lib.remember_prompt(proj, params.prompt)
    if params.model then lib.remember_model(proj, params.model) end
    local ok_list, failed = lib.submit_items(items, lib.params_per_item(params), spool, ts, te, areas)
    if #failed > 0 then reaper.ShowMessageBox(lib.summary(ok_list, failed), TITLE, 0) end
    if #ok_list > 0 then lib.open_jobs_window() end
  end
  local ImGui = lib.imgui_api()
  if ImGui then
    lib.run_edit_dialog(ImGui, { info = info, items = items, areas = areas, ts = ts, te = te, proj = proj,
                                 title = TITLE }, function(params)
      lib.set_setting("last_prompt", params.prompt)
      lib.set_setting("last_etas", params.etas_text)
      if params.model then lib.remember_etas(lib.pick_model(lib.models(info), params.model), params.mode,
                                             params.etas_text) end
      lib.set_setting("last_mode", params.mode)
      lib.set_setting("last_seed", params.seed_text)
      go(params)
    end)
    return
  end
  local params = ask_params(info, proj)
  if params then go(params) end
end

main()
reaper.defer(function() end) -- no automatic undo point: this action does not change the project
