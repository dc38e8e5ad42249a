-- @noindex
--[[ The edit dialog on ReaImGui, in plain words: what the sound should become (with this project's earlier prompts),
how much to change (presets, a slider, and the numbers themselves), what kind of edit by what it does and costs,
the engine's models, lyrics / key / language when the chosen model takes them, the seed, and the range that will be
edited. Without ReaImGui the GetUserInputs dialog of the action asks the same. ]]
local M = require("aiedit.core")

local function clock(t)
  t = math.max(0, t or 0)
  return string.format("%d:%06.3f", math.floor(t / 60), t - 60 * math.floor(t / 60))
end

-- What will be edited: razor areas, the part of the items under the time selection, or whole items.
function M.range_text(d)
  local n = M.count_jobs(d.items, d.areas)
  if d.areas then return string.format("Razor areas: %d range%s on %d item%s are regenerated; the rest stays.", n,
    n == 1 and "" or "s", #d.items, #d.items == 1 and "" or "s") end
  local touched = 0
  if d.ts and d.te and d.te - d.ts > 1e-6 then
    for _, it in ipairs(d.items) do
      local info = { pos = reaper.GetMediaItemInfo_Value(it, "D_POSITION"),
                     len = reaper.GetMediaItemInfo_Value(it, "D_LENGTH") }
      if M.selection_overlap(info, d.ts, d.te) then touched = touched + 1 end
    end
  end
  if touched > 0 then
    return string.format("Only %s – %s (the time selection) is regenerated in %d of %d item%s; the rest comes " ..
      "back unchanged.", clock(d.ts), clock(d.te), touched, #d.items, #d.items == 1 and "" or "s")
  end
  return string.format("Whole items: %d selected.", #d.items)
end

-- The dialog's values checked; returns params (as the action submits them) or nil and a list of problems.
function M.dialog_params(d, s)
  local problems = {}
  local prompt = M.trim(s.prompt)
  if prompt == "" then problems[#problems + 1] = "Type what the sound should become."
  elseif M.text_length(prompt) > 1000 then problems[#problems + 1] = "The prompt is longer than 1000 characters." end
  local etas, why = M.parse_etas(s.etas, s.mode)
  if not etas then problems[#problems + 1] = "Strengths: " .. why end
  local seed, swhy = M.parse_seed(s.seed)
  if not seed then problems[#problems + 1] = "Seed: " .. swhy end
  if s.mode == "repaint" and not d.areas and not (d.ts and d.te and d.te - d.ts > 1e-6) then
    problems[#problems + 1] = "Repaint regenerates a range: make a time selection (or razor area) over part of the " ..
      "item."
  end
  local music = {}
  for name in pairs(M.TEXT_FIELDS) do
    if s.model and s.model.takes[name] and s[name] and s[name] ~= "" then
      local v, err = M.check_text_field(name, s[name])
      if v then music[name] = v else problems[#problems + 1] = err end
    end
  end
  if #problems > 0 then return nil, problems end
  return { prompt = prompt, etas = etas, mode = s.mode, seed = seed, priority = "interactive",
           model = s.model and s.model.name or nil, music = music, etas_text = M.trim(s.etas),
           seed_text = M.trim(s.seed) }
end

-- Runs the dialog in a defer loop; calls on_ok(params) once when the user presses Edit, nothing on Cancel.
-- d: {info = daemon.json, items, areas, ts, te, proj, title}.
function M.run_edit_dialog(ImGui, d, on_ok)
  local ctx = ImGui.CreateContext(d.title or "AI edit")
  local models = M.models(d.info)
  local history = M.prompt_history(d.proj)
  local s = { prompt = history[1] or M.get_setting("last_prompt"), etas = M.get_setting("last_etas"),
              seed = M.get_setting("last_seed"), lyrics = "", key = "", language = "", problems = {} }
  s.model = M.pick_model(models, M.last_model(d.proj))
  local function modes() return M.model_modes(d.info, s.model) end
  s.mode = M.parse_mode(M.get_setting("last_mode"), modes()) or modes()[1]
  -- the model's strengths for the chosen mode (the user's own for that model and mode, else its defaults) when
  -- daemon.json gives them; an older daemon's dialog keeps the one remembered "last_etas"
  local function refill() s.etas = M.etas_for(s.model, s.mode) or s.etas end
  refill()
  local labels = {}
  for i, m in ipairs(models) do labels[i] = M.model_label(m) end
  local first = true
  local function loop()
    if first then
      first = false
      ImGui.SetNextWindowSize(ctx, 640, 520, ImGui.Cond_FirstUseEver)
    end
    local visible, open = ImGui.Begin(ctx, d.title or "AI edit", true)
    local result = nil
    if visible then
      ImGui.TextWrapped(ctx, M.range_text(d))
      ImGui.Separator(ctx)
      local _
      _, s.prompt = ImGui.InputText(ctx, "Prompt", s.prompt)
      if #history > 0 then
        local changed, pick = ImGui.Combo(ctx, "Earlier prompts", -1, table.concat(history, "\0") .. "\0")
        if changed and history[pick + 1] then s.prompt = history[pick + 1] end
      end
      if #models > 0 then
        local cur = 0
        for i, m in ipairs(models) do if m == s.model then cur = i - 1 end end
        local changed, pick = ImGui.Combo(ctx, "Model", cur, table.concat(labels, "\0") .. "\0")
        if changed and models[pick + 1] then
          s.model = models[pick + 1]
          if not M.parse_mode(s.mode, modes()) then s.mode = modes()[1] end
          refill()
        end
      end
      ImGui.Text(ctx, "What kind of edit")
      for _, m in ipairs(modes()) do
        if ImGui.RadioButton(ctx, M.mode_words(m) .. "##" .. m, s.mode == m) and s.mode ~= m then
          s.mode = m
          refill()
        end
      end
      ImGui.Text(ctx, "How much to change (one take per strength)")
      for i, p in ipairs(M.presets(s.model, s.mode)) do
        if i > 1 then ImGui.SameLine(ctx) end
        if ImGui.Button(ctx, p.name) then s.etas = p.etas end
      end
      local defaults = M.model_strengths(s.model, s.mode)
      if defaults then
        ImGui.TextDisabled(ctx, string.format("Defaults for %s, %s: %s", s.model.name, s.mode, M.etas_text(defaults)))
      end
      local top = M.ZERO_SHOT[s.mode] and 1.0 or 1.5
      local first_eta = tonumber((M.decimal_commas(s.etas):match("[%d.]+"))) or 0.5
      local moved, v = ImGui.SliderDouble(ctx, "Strength", math.min(top, first_eta), 0.05, top, "%.2f")
      if moved then s.etas = string.format("%.2f", v) end
      _, s.etas = ImGui.InputText(ctx, "Strengths", s.etas)
      if s.model then
        if s.model.takes.lyrics then _, s.lyrics = ImGui.InputTextMultiline(ctx, "Lyrics", s.lyrics) end
        if s.model.takes.key then _, s.key = ImGui.InputText(ctx, "Key", s.key) end
        if s.model.takes.language then _, s.language = ImGui.InputText(ctx, "Language", s.language) end
      end
      local music = M.musical_context(d.proj, d.items[1] and reaper.GetMediaItemInfo_Value(d.items[1],
        "D_POSITION") or 0)
      if music.bpm or music.time_signature then
        ImGui.TextDisabled(ctx, string.format("Tempo from the project at each item (first: %s bpm, %s)",
          music.bpm and string.format("%g", music.bpm) or "?", music.time_signature or "?"))
      end
      _, s.seed = ImGui.InputText(ctx, "Seed (empty = random)", s.seed)
      for _, p in ipairs(s.problems) do ImGui.TextColored(ctx, 0xFF6060FF, p) end
      local go = ImGui.Button(ctx, string.format("Edit %d item%s", #d.items, #d.items == 1 and "" or "s"))
      ImGui.SameLine(ctx)
      local cancel = ImGui.Button(ctx, "Cancel")
      if not ImGui.IsAnyItemActive(ctx) then
        go = go or ImGui.IsKeyPressed(ctx, ImGui.Key_Enter, false)
        cancel = cancel or ImGui.IsKeyPressed(ctx, ImGui.Key_Escape, false)
      end
      if go then
        local params, problems = M.dialog_params(d, s)
        if params then result = params else s.problems = problems end
      elseif cancel then
        result = false
      end
      ImGui.End(ctx)
    end
    if open == false then result = false end
    if result == nil then reaper.defer(loop) return end
    if result then on_ok(result) end
  end
  reaper.defer(loop)
end

return M
