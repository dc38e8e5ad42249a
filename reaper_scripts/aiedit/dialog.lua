-- @noindex
--[[ Dialog values: GetUserInputs wrapper and parsers for mode, strengths and seed. ]]
local M = require("aiedit.core")
---------------------------------------------------------------------------------------------
-- Dialog values
---------------------------------------------------------------------------------------------

function M.trim(s) return (tostring(s or ""):gsub("^%s+", ""):gsub("%s+$", "")) end

-- Every edit mode the scripts know (docs/protocol.md). A daemon lists the ones its model runs in daemon.json
-- "modes"; an old daemon does not, and then all are offered.
M.MODES = { "lora", "full", "flowedit", "zeta", "sdedit" }
-- modes a model lists in daemon.json "models" (issue 23: ACE-Step's own repaint and cover) are offered too
local LISTED_ONLY = { repaint = true, cover = true }

-- The modes to offer: daemon.json's "modes" (known ones, in its order), else every mode.
function M.offered_modes(info)
  local listed = info and M.val(info.modes)
  if type(listed) ~= "table" or #listed == 0 then return M.MODES end
  local known, out = {}, {}
  for _, m in ipairs(M.MODES) do known[m] = true end
  for m in pairs(LISTED_ONLY) do known[m] = true end
  for _, m in ipairs(listed) do if known[m] then out[#out + 1] = m end end
  return #out > 0 and out or M.MODES
end

local function offers(modes, m)
  for _, x in ipairs(modes) do if x == m then return true end end
  return false
end

-- The protocol mode from what people type: one of `modes` (default: all); "preview" / "quick" is the fast
-- zero-shot edit: flowedit when the daemon lists it (flow models), else zeta. Returns mode, or nil and why.
function M.parse_mode(s, modes)
  modes = modes or M.MODES
  s = M.trim(s):lower()
  local m
  if s == "" then m = "lora"
  elseif s == "full fine-tune" or s == "finetune" then m = "full"
  elseif s == "preview" or s == "quick preview" or s == "quick" then
    -- an old daemon lists no modes (all are offered): it knows zeta, not flowedit
    m = (modes ~= M.MODES and offers(modes, "flowedit")) and "flowedit" or "zeta"
  else m = s end
  if offers(modes, m) then return m end
  return nil, "one of " .. table.concat(modes, " / ") .. " (or preview)"
end

-- Zero-shot modes take noise strengths in (0, 1] instead of η (cover: cover strengths in (0, 1]).
M.ZERO_SHOT = { sdedit = true, zeta = true, flowedit = true, cover = true, repaint = true }

-- "0,3 0,5" (a decimal comma, as typed where it is the decimal mark): a comma between two digits is a decimal
-- comma when the text has no decimal point; any other comma separates values ("0.3,0.5", "0, 1").
function M.decimal_commas(s)
  s = tostring(s or "")
  if s:find(".", 1, true) then return s end
  return (s:gsub("(%d),(%d)", "%1.%2"))
end

function M.parse_etas(s, mode)
  local etas = M.array()
  for part in M.decimal_commas(s):gmatch("[^,;%s]+") do
    local v = tonumber(part)
    if not v then return nil, "not a number: " .. part end
    if M.ZERO_SHOT[mode] then
      if v <= 0 or v > 1 then return nil, "quick preview strengths must be in (0, 1]: " .. part end
    elseif v < 0 or v > 1.5 then
      return nil, "η must be in [0, 1.5]: " .. part
    end
    etas[#etas + 1] = v + 0.0
  end
  if #etas == 0 then return nil, "give at least one η value" end
  if #etas > 16 then return nil, "at most 16 η values" end
  return etas
end

-- Empty or "random": a fresh seed (recorded with the takes so results stay reproducible).
function M.parse_seed(s)
  s = M.trim(s):lower()
  if s == "" or s == "random" then return M.random(0, 2147483646) end
  local v = math.tointeger(tonumber(s))
  if not v or v < 0 then return nil, "seed must be a whole number ≥ 0 (or empty for random)" end
  return v
end

-- Characters, not bytes: a 400-character Japanese prompt is 1200 bytes. Invalid UTF-8 counts bytes.
function M.text_length(s) return utf8.len(s) or #s end

-- GetUserInputs reads its defaults quote-aware: a lone ' or " makes it ignore the separator up to a closing
-- one, so one apostrophe in a remembered prompt sent every later default into the prompt field (issue 18), and an
-- unclosed parenthesis does the same (issue 24). Whether it also strips balanced quotes is not known. So a default
-- is never shown with ASCII quotes (they become ’ ”), nor with unbalanced parentheses (（ ）). Left as shown, the
-- original text comes back; edited, the stand-ins the default brought are turned back into what they stood for
-- (a JSON steps override or a quoted engine path stays valid, and a prompt keeps its plain apostrophes).
local STAND_INS = { { "'", "’" }, { '"', "”" } }
local PARENS = { { "(", "（" }, { ")", "）" } }

local function balanced(d)
  local depth = 0
  for c in d:gmatch("[()]") do
    depth = depth + (c == "(" and 1 or -1)
    if depth < 0 then return false end
  end
  return depth == 0
end

-- The default as shown, and the stand-ins used in it ({ascii, shown} pairs).
local function shown_default(d)
  local used = {}
  local subs = { table.unpack(STAND_INS) }
  if not balanced(d) then subs[#subs + 1], subs[#subs + 2] = PARENS[1], PARENS[2] end
  for _, sub in ipairs(subs) do
    if d:find(sub[1], 1, true) then
      d = d:gsub(sub[1]:gsub("%p", "%%%0"), sub[2])
      used[#used + 1] = sub
    end
  end
  return d, used
end

local function unshown(v, used)
  for _, sub in ipairs(used) do v = v:gsub(sub[2], (sub[1]:gsub("%%", "%%%%"))) end
  return v
end

-- GetUserInputs with "\n" as the value separator: prompts may contain commas. The separator applies to
-- the values only: REAPER always splits the captions on commas, so a caption must never hold one (a comma in
-- an error note becomes ";").
function M.user_inputs(title, captions, defaults, width)
  for _, c in ipairs(captions) do
    if c:find(",", 1, true) then error("dialog caption holds a comma: " .. c) end
  end
  local shown, used = {}, {}
  for i, d in ipairs(defaults) do
    defaults[i] = tostring(d):gsub("[\r\n]+", " ")
    shown[i], used[i] = shown_default(defaults[i])
  end
  local caps = table.concat(captions, ",") .. ",separator=\n,extrawidth=" .. (width or 250)
  local ok, csv = reaper.GetUserInputs(title, #captions, caps, table.concat(shown, "\n"))
  if not ok then return nil end
  local vals = {}
  for v in (csv .. "\n"):gmatch("([^\n]*)\n") do vals[#vals + 1] = v end
  for i, v in ipairs(vals) do
    if shown[i] ~= defaults[i] then
      if v == shown[i] then vals[i] = defaults[i] else vals[i] = unshown(v, used[i] or {}) end
    end
  end
  return vals
end

-- Asks until every field is valid or the user cancels. fields: {name = "Prompt", hint = "...", check =
-- function(value, values) -> parsed or nil, why, refill = optional function(value, values) -> a new value and why,
-- or nil}. A refilled field comes back with its new value and why. A wrong field is shown in its own caption
-- ("! Mode: why"), so the dialog says which field is wrong; no caption names another field. Returns the parsed
-- values or nil.
function M.ask_fields(title, fields, defaults, width)
  local notes = {}
  while true do
    local caps = {}
    for i, f in ipairs(fields) do
      caps[i] = notes[i] and ("! " .. f.name .. ": " .. notes[i]) or (f.hint and (f.name .. " (" .. f.hint .. ")")
        or f.name)
      caps[i] = caps[i]:gsub(",", ";")
    end
    local v = M.user_inputs(title, caps, defaults, width)
    if not v then return nil end
    defaults, notes = v, {}
    local out, bad = {}, false
    for i, f in ipairs(fields) do
      local new, note = nil, nil
      if f.refill then new, note = f.refill(v[i] or "", v) end
      if new then
        v[i], notes[i], bad = new, note, true
      else
        local val, why = f.check(v[i] or "", v)
        if val == nil then notes[i], bad = why or "invalid", true else out[i] = val end
      end
    end
    if not bad then return out, v end
  end
end

---------------------------------------------------------------------------------------------
-- Models, modes in plain words, the song's tempo, prompt history (issues 23 and 24)
---------------------------------------------------------------------------------------------

-- daemon.json "strengths" of a model: {mode = {numbers}} for each mode whose list is usable (1-16 numbers in
-- (0, 1.5]); anything else is left out, and that mode keeps the general presets.
local function parse_strengths(t)
  local out = {}
  t = M.val(t)
  if type(t) ~= "table" then return out end
  for mode, list in pairs(t) do
    list = M.val(list)
    if type(mode) == "string" and type(list) == "table" and #list >= 1 and #list <= 16 then
      local nums = {}
      for i, v in ipairs(list) do
        if type(v) ~= "number" or v <= 0 or v > 1.5 then nums = nil break end
        nums[i] = v
      end
      if nums and #nums == #list then out[mode] = nums end
    end
  end
  return out
end

-- daemon.json "models": [{name, kind = "music" | "sound effects" | "general", modes, takes, strengths, loaded}], the
-- default model first. An older daemon lists none: then the job names no model and the daemon's own runs.
function M.models(info)
  local out = {}
  local listed = info and M.val(info.models)
  if type(listed) ~= "table" then return out end
  for _, m in ipairs(listed) do
    if type(m) == "table" and type(M.val(m.name)) == "string" then
      local takes = {}
      for _, t in ipairs(type(M.val(m.takes)) == "table" and M.val(m.takes) or {}) do takes[t] = true end
      out[#out + 1] = { name = M.val(m.name), kind = M.val(m.kind) or "general", modes = M.val(m.modes),
                        takes = takes, loaded = M.val(m.loaded) == true, strengths = parse_strengths(m.strengths) }
    end
  end
  return out
end

function M.model_label(m) return string.format("%s (%s)", m.name, m.kind or "general") end

-- The model named `name` among `models`, else the default (the first), else nil.
function M.pick_model(models, name)
  for _, m in ipairs(models) do if m.name == name then return m end end
  return models[1]
end

-- The modes to offer for a model: its own list, else daemon.json's (the default model's), else every mode.
function M.model_modes(info, model)
  if model and type(model.modes) == "table" and #model.modes > 0 then
    return M.offered_modes({ modes = model.modes })
  end
  return M.offered_modes(info)
end

-- The modes in words: what each does and what it costs.
M.MODE_WORDS = {
  lora = "Careful edit: learns this sound first (minutes)",
  full = "Deep edit: full fine-tune (slowest, minutes)",
  flowedit = "Preview: quick edit, no learning (seconds)",
  zeta = "Preview: quick edit, no learning (seconds)",
  sdedit = "Rough preview: re-noise and redo (seconds)",
  repaint = "Repaint the range: the music model's own (seconds)",
  cover = "Restyle: a cover of the whole item (seconds)",
}
M.MODES_KNOWN = { "lora", "full", "flowedit", "zeta", "sdedit", "repaint", "cover" }

function M.mode_words(mode) return M.MODE_WORDS[mode] or mode end

-- How much to change, as presets of the strengths (the numbers stay editable): the general ones, for a model
-- whose daemon.json gives no strengths (an older daemon).
M.PRESETS = {
  { name = "A touch", etas = "0.3", zero_shot = "0.3" },
  { name = "Clearly", etas = "0.5", zero_shot = "0.5" },
  { name = "A lot", etas = "0.8", zero_shot = "0.8" },
  { name = "Three to compare", etas = "0.3, 0.5, 0.7", zero_shot = "0.3, 0.5, 0.7" },
}

-- Strengths as the dialogs show them: "0.75, 0.85, 0.95".
function M.etas_text(list)
  local parts = {}
  for i, v in ipairs(list) do parts[i] = string.format("%g", v) end
  return table.concat(parts, ", ")
end

-- The model's default strengths for `mode` (daemon.json "strengths"), or nil when the daemon gives none.
function M.model_strengths(model, mode)
  return model and model.strengths and mode and model.strengths[mode] or nil
end

-- The presets for a model and mode. With the model's defaults for that mode, the presets span them: "A touch" is
-- the gentlest default, "Clearly" the middle one, "A lot" the strongest, "Three to compare" exactly the defaults
-- (what the dialog fills in). Not the general presets scaled by the model's middle value: the defaults are the
-- range measured to edit without losing the input (docs/performance.md, "Flow-model default strengths": FlowEdit
-- on a flow model moves 18-44 % at 0.75-0.95, its Text peaks at 0.85, and from 1 the input is lost), and a ratio of
-- 0.3 / 0.5 / 0.8 around 0.85 would put "A touch" at 0.51, a near-copy (11 % moved), and "A lot" past 1. Going
-- beyond the range stays one typed number away. Without defaults (an older daemon) the general presets.
function M.presets(model, mode)
  local d = M.model_strengths(model, mode)
  local out = {}
  if not d then
    for i, p in ipairs(M.PRESETS) do out[i] = { name = p.name, etas = M.ZERO_SHOT[mode] and p.zero_shot or p.etas } end
    return out
  end
  local sorted = { table.unpack(d) }
  table.sort(sorted)
  local n = #sorted
  return { { name = "A touch", etas = M.etas_text({ sorted[1] }) },
           { name = "Clearly", etas = M.etas_text({ sorted[(n + 1) // 2] }) },
           { name = "A lot", etas = M.etas_text({ sorted[n] }) },
           { name = "Three to compare", etas = M.etas_text(d) } }
end

-- Strengths the user chose, per model and mode (setting "etas_by_model", a JSON object): a FlowEdit strength is a
-- noise level where a LoRA η is not, and a sound model's numbers are near-copies on a flow model, so a value
-- chosen for one model and mode never fills the dialog for another.
local function pair_key(model, mode) return model.name .. "\t" .. mode end

local function chosen_etas()
  local t = M.json_decode(M.get_setting("etas_by_model"))
  return type(t) == "table" and t or {}
end

-- The strengths to fill in for `model` and `mode`: the user's own for that same model and mode, else the model's
-- defaults; nil when daemon.json gives no defaults (an older daemon: the caller keeps the one "last_etas").
function M.etas_for(model, mode)
  local d = M.model_strengths(model, mode)
  if not d then return nil end
  local mine = chosen_etas()[pair_key(model, mode)]
  if type(mine) == "string" and M.parse_etas(mine, mode) then return mine end
  return M.etas_text(d)
end

-- Remembers `text` as the user's strengths for `model` and `mode` (a model with defaults only). The defaults
-- themselves are not stored, so a later engine's new defaults reach the dialog.
function M.remember_etas(model, mode, text)
  local d = M.model_strengths(model, mode)
  if not d then return end
  local t, key = M.object({}), pair_key(model, mode)
  for k, v in pairs(chosen_etas()) do if k ~= key and type(v) == "string" then t[k] = v end end
  local etas = M.parse_etas(text, mode)
  if etas and M.etas_text(etas) ~= M.etas_text(d) then t[key] = M.trim(text) end
  local encoded = M.json_encode(t)
  while #encoded > 3000 do -- stays well inside an ExtState value: others are forgotten first
    local other = nil
    for k in pairs(t) do if k ~= key then other = k break end end
    if not other then break end
    t[other] = nil
    encoded = M.json_encode(t)
  end
  M.set_setting("etas_by_model", encoded)
end

-- For a GetUserInputs dialog whose Model or Mode field the user may change: a field `refill` (M.ask_fields) for the
-- strengths. When the user changed the model or mode and left the strengths as shown (numbers for the choice the
-- dialog showed), the new choice's strengths (M.etas_for) are put in and the dialog asks again saying so; numbers
-- the user typed are kept. pair(values) -> model, mode (nil when they do not parse).
function M.etas_refill(pair, model, mode, shown)
  local key = model and mode and pair_key(model, mode)
  return function(text, values)
    local m, md = pair(values)
    if not (m and md) then return nil end
    local k = pair_key(m, md)
    if k == key then shown = text return nil end
    local untouched = M.trim(text) == M.trim(shown or "")
    local new = M.etas_for(m, md)
    key, shown = k, text
    if untouched and new and M.trim(new) ~= M.trim(text) then
      shown = new
      return new, string.format("%s for %s %s - OK to use them", new, m.name, md)
    end
    return nil
  end
end

-- The project's tempo and time signature at `time` (the tempo map's marker there), as job fields: bpm in [20, 300]
-- and "N/D" with N 1-32 and D a power of two up to 32; a value outside those is left out.
function M.musical_context(proj, time)
  if not reaper.TimeMap_GetTimeSigAtTime then return {} end
  local num, denom, bpm = reaper.TimeMap_GetTimeSigAtTime(proj, time)
  local out = {}
  bpm = tonumber(bpm)
  if bpm and bpm >= 20 and bpm <= 300 then out.bpm = math.floor(bpm * 100 + 0.5) / 100 end
  num, denom = math.tointeger(tonumber(num)), math.tointeger(tonumber(denom))
  local denoms = { [1] = true, [2] = true, [4] = true, [8] = true, [16] = true, [32] = true }
  if num and denom and num >= 1 and num <= 32 and denoms[denom] then
    out.time_signature = string.format("%d/%d", num, denom)
  end
  return out
end

-- Optional musical text fields a model may take, with their limits (docs/protocol.md).
M.TEXT_FIELDS = { lyrics = 4096, key = 32, language = 16 }

function M.check_text_field(name, s)
  s = tostring(s or "")
  if name ~= "lyrics" then s = M.trim(s) end
  if M.text_length(s) > M.TEXT_FIELDS[name] then
    return nil, string.format("%s: at most %d characters", name, M.TEXT_FIELDS[name])
  end
  return s
end

-- Per-project memory (ProjExtState section "aiedit"): the last model and the prompt history (newest first).
M.HISTORY_MAX = 20

function M.project_value(proj, key)
  local _, v = reaper.GetProjExtState(proj, M.SECTION, key)
  return v or ""
end

function M.prompt_history(proj)
  local list = M.json_decode(M.project_value(proj, "prompts"))
  return type(list) == "table" and list or {}
end

function M.remember_prompt(proj, prompt)
  local list = M.array({ prompt })
  for _, p in ipairs(M.prompt_history(proj)) do
    if p ~= prompt and #list < M.HISTORY_MAX and type(p) == "string" then list[#list + 1] = p end
  end
  -- long prompts are cut so the history stays well inside an ext-state value
  local text = M.json_encode(list)
  while #text > 3000 and #list > 1 do list[#list] = nil text = M.json_encode(list) end
  reaper.SetProjExtState(proj, M.SECTION, "prompts", text)
end

function M.remember_model(proj, name) reaper.SetProjExtState(proj, M.SECTION, "last_model", name or "") end
function M.last_model(proj) return M.project_value(proj, "last_model") end

return M
