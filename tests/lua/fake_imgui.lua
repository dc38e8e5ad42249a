--[[
A fake of the ReaImGui functions the aiedit scripts use (cfillion/reaimgui, API 0.9 through its shim:
`package.path = reaper.ImGui_GetBuiltinPath() .. '/?.lua'; local ImGui = require 'imgui' '0.9'`), for running the
jobs window and the dialog headless. Installed by fake_reaper.lua when the scenario says "imgui": true.

Nothing is drawn. Every widget of a frame (one defer cycle) is recorded, table cells by row and column, so a test can
read what the window shows; the runner queues clicks, keys and typed text for the next frame. Strict where ReaImGui
is; each modelled behaviour quotes the API text (api/*.cpp of cfillion/reaimgui) it follows:

- CreateContext(label, config_flags): "The context will remain valid as long as it is used in each defer cycle.
  The label is used for the tab text when windows are docked in REAPER and also as a unique identifier for
  storing settings." A context not used during a defer cycle is destroyed; using it later raises.
- Begin(ctx, name, p_open, flags) -> visible, open: "Passing true to 'p_open' shows a window-closing widget ...
  which clicking will set the boolean to false when returned"; "Begin() return false to indicate the window is
  collapsed or fully clipped" and, in ReaImGui, End must then not be called (Begin ends the window itself). End
  without a visible Begin raises; a frame that ends with a window still open raises.
- Window settings: ReaImGui stores "window position, size, dock state and table settings" per context label in
  <resource path>/ReaImGui/<hash>.ini (the user can turn that off: its "Restore window position, size, dock state"
  preference, scenario "imgui_saved_settings": false). The fake keeps them in <resource>/ReaImGui/<label>.json.
  SetNextWindowPos/Size/DockID(ctx, ..., cond): Cond_FirstUseEver = "Set the variable if the object/window has no
  persistently saved data (no entry in .ini file)", Cond_Once = "only once per runtime session", Cond_Always.
  Dock IDs: "0 = undocked, -1 to -16 = REAPER docker index". The user moving, resizing or docking the window is the
  runner step "imgui_window" (applied at the next Begin).
- IsKeyPressed(ctx, key, repeat): "Was key pressed (went from !Down to Down)?" -- true in the one frame after the
  runner's "imgui_key" step. IsAnyItemActive(ctx): true while a text field has the keyboard (step "imgui_type").
- Button/SmallButton(ctx, label): true in the frame the runner "clicks" it; Selectable(ctx, label, p_selected,
  flags) -> clicked, selected; Checkbox(ctx, label, v) -> changed, v; RadioButton(ctx, label, active) -> clicked;
  "Use with e.g. if (RadioButton("one", my_value==1)) { my_value = 1; }". Labels follow Dear ImGui: "##" starts the
  hidden part of an id; PushID/PopID prefix it. A click names a widget by its label, its visible text, the part
  after "##", or its "<id stack>/<label>" path; a click on no widget is an error.
- InputText(ctx, label, buf, flags) -> changed, buf; InputTextMultiline(ctx, label, buf, w, h, flags);
  SliderDouble(ctx, label, v, v_min, v_max, format, flags) -> changed, v; Combo(ctx, label, current_item, items)
  -> changed, current_item, where "Each item must be null-terminated" ("a\0b\0").
- BeginTable(ctx, id, columns, flags, ...) / EndTable: "Only call EndTable() if BeginTable() returns true!";
  TableNextRow: "Append into the first cell of a new row."; TableNextColumn: "Append into the next column (or
  first column of next row if currently in last column)"; TableSetupColumn, TableHeadersRow, TableSetupScrollFreeze.
- OpenPopup(ctx, str_id): "Set popup state to open (don't call every frame!)"; BeginPopupModal(ctx, name, p_open,
  flags): "Return true if the modal is open"; EndPopup: "Only call EndPopup() if BeginPopup*() returns true!";
  CloseCurrentPopup: "Use inside the BeginPopup/EndPopup scope to close manually."
- CreateImage(file, flags): loads a PNG ("The returned object is valid as long as it is used in each defer cycle
  unless attached to a context (see Attach)"); the fake reads the PNG signature, chunk CRCs and IHDR, and raises on
  anything else, as ReaImGui does for a file it cannot decode. Image_GetSize(image) -> w, h. Image(ctx, image, w, h).
- ProgressBar(ctx, fraction, size_arg_w, size_arg_h, overlay); Text, TextDisabled, TextWrapped, TextColored,
  SameLine, Separator, Spacing, SetNextItemWidth, BeginDisabled/EndDisabled ("Disable all user interactions": a
  disabled widget cannot be clicked), IsItemHovered, SetTooltip, SetScrollHereY, IsWindowDocked, GetWindowDockID,
  GetWindowPos, GetWindowSize, Attach.
]]

local M = {}

local function png_size(path)
  local f = io.open(path, "rb")
  if not f then return nil, "cannot open " .. path end
  local data = f:read("a")
  f:close()
  if data:sub(1, 8) ~= "\137PNG\r\n\26\n" then return nil, "not a PNG" end
  local pos, w, h, seen_end = 9, nil, nil, false
  local crc_table = {}
  for i = 0, 255 do
    local c = i
    for _ = 1, 8 do c = (c & 1 == 1) and (0xEDB88320 ~ (c >> 1)) or (c >> 1) end
    crc_table[i] = c
  end
  local function crc(s)
    local c = 0xFFFFFFFF
    for i = 1, #s do c = crc_table[(c ~ s:byte(i)) & 0xFF] ~ (c >> 8) end
    return c ~ 0xFFFFFFFF
  end
  while pos <= #data do
    local len, kind = string.unpack(">I4c4", data, pos)
    local body = data:sub(pos + 8, pos + 7 + len)
    local want = string.unpack(">I4", data, pos + 8 + len)
    if crc(kind .. body) ~= want then return nil, "bad CRC in chunk " .. kind end
    if kind == "IHDR" then w, h = string.unpack(">I4I4", body) end
    if kind == "IEND" then seen_end = true break end
    pos = pos + 12 + len
  end
  if not (w and h and seen_end) then return nil, "truncated PNG" end
  return w, h, #data
end
M.png_size = png_size

function M.install(F, R, scenario)
  local S = {
    contexts = {}, frame = nil, last_frame = nil, clicks = {}, keys = {}, typed = {}, window_moves = {},
    saved = scenario.imgui_saved_settings ~= false, images = {}, images_loaded = 0, popups = {},
    resource = scenario.resource_path or "/tmp/reaper-resource",
  }
  F.imgui = S
  local I = {}

  -- constants (values, as the 0.9 shim gives them)
  I.Cond_Always, I.Cond_Once, I.Cond_FirstUseEver, I.Cond_Appearing = 1, 2, 4, 8
  I.WindowFlags_None, I.WindowFlags_NoCollapse, I.WindowFlags_AlwaysAutoResize = 0, 32, 64
  I.WindowFlags_NoSavedSettings, I.WindowFlags_NoDocking = 256, 2097152
  I.ConfigFlags_DockingEnable = 128
  I.TableFlags_None, I.TableFlags_Resizable, I.TableFlags_RowBg = 0, 1, 64
  I.TableFlags_Borders, I.TableFlags_ScrollY, I.TableFlags_SizingStretchProp = 1920, 33554432, 24576
  I.TableColumnFlags_WidthFixed, I.TableColumnFlags_WidthStretch = 16, 8
  I.SelectableFlags_SpanAllColumns, I.SelectableFlags_AllowOverlap = 2, 16
  I.InputTextFlags_Password, I.InputTextFlags_EnterReturnsTrue = 32768, 32
  I.HoveredFlags_None = 0
  I.Key_Space, I.Key_UpArrow, I.Key_DownArrow, I.Key_Escape, I.Key_Enter = 524, 515, 516, 526, 525
  I.Key_A, I.Key_Delete, I.Key_Tab = 546, 522, 512
  local KEYS = { Space = I.Key_Space, UpArrow = I.Key_UpArrow, DownArrow = I.Key_DownArrow, Escape = I.Key_Escape,
                 Enter = I.Key_Enter, A = I.Key_A, Delete = I.Key_Delete, Tab = I.Key_Tab }

  local function settings_path(label) return S.resource .. "/ReaImGui/" .. label:gsub("[^%w]", "_") .. ".json" end

  local function load_settings(label)
    if not S.saved then return {} end
    local f = io.open(settings_path(label), "rb")
    if not f then return {} end
    local text = f:read("a")
    f:close()
    local t = {}
    for name, x, y, w, h, dock in text:gmatch('"([^"]+)":%[([-%d.]+),([-%d.]+),([-%d.]+),([-%d.]+),([-%d]+)%]') do
      t[name] = { x = tonumber(x), y = tonumber(y), w = tonumber(w), h = tonumber(h), dock = tonumber(dock) }
    end
    return t
  end

  local function save_settings(ctx)
    if not S.saved then return end
    os.execute('mkdir -p "' .. S.resource .. '/ReaImGui"')
    local parts = {}
    for name, st in pairs(ctx.windows) do
      parts[#parts + 1] = string.format('"%s":[%g,%g,%g,%g,%d]', name, st.x, st.y, st.w, st.h, st.dock)
    end
    local f = assert(io.open(settings_path(ctx.label), "wb"))
    f:write("{" .. table.concat(parts, ",") .. "}")
    f:close()
  end

  local function frame()
    if not S.frame then
      S.frame = { widgets = {}, tables = {}, texts = {}, id_stack = {}, window = nil, disabled = 0,
                  popup_stack = {} }
    end
    return S.frame
  end

  local function use(ctx)
    if type(ctx) ~= "table" or ctx.kind ~= "imgui_context" then error("ImGui: expected a context, got " ..
      tostring(ctx), 3) end
    if ctx.destroyed then error("ImGui: the context was not used in a defer cycle and is no longer valid", 3) end
    ctx.used = true
    return frame()
  end

  local function path(fr, label)
    if #fr.id_stack == 0 then return label end
    return table.concat(fr.id_stack, "/") .. "/" .. label
  end

  local function visible_label(label) return (label:gsub("##.*$", "")) end

  local function add_cell(fr, text)
    local t = fr.table
    if t and t.row then
      local cell = t.row[t.col] or {}
      cell[#cell + 1] = text
      t.row[t.col] = cell
    end
  end

  -- Records a text into the frame and the current table cell (if any).
  local function put_text(fr, kind, text)
    text = tostring(text)
    fr.texts[#fr.texts + 1] = text
    fr.widgets[#fr.widgets + 1] = { kind = kind, text = text }
    add_cell(fr, text)
  end

  -- Was the widget clicked this frame? A queued click names it by label, visible label or path.
  local function clicked(fr, kind, label)
    local p, vis = path(fr, label), visible_label(label)
    fr.widgets[#fr.widgets + 1] = { kind = kind, label = label, path = p, text = vis, disabled = fr.disabled > 0 }
    fr.texts[#fr.texts + 1] = vis
    add_cell(fr, vis)
    local want = S.clicks[1]
    if want and not want.done and (want.target == label or want.target == p or want.target == vis
        or want.target == label:match("##(.*)$")) then
      if fr.disabled > 0 then error("ImGui: clicked a disabled widget: " .. p) end
      want.done = true
      return true
    end
    return false
  end

  -- the API table handed out by require 'imgui' '0.9'
  function I.CreateContext(label, _)
    if not label or label == "" then error("context label is required") end
    local loaded = load_settings(label)
    local ctx = { kind = "imgui_context", label = label, windows = {}, loaded = {}, created = {}, once = {} }
    for name, st in pairs(loaded) do ctx.windows[name], ctx.loaded[name] = st, true end
    S.contexts[#S.contexts + 1] = ctx
    ctx.used = true
    return ctx
  end
  function I.Attach(ctx, obj) use(ctx) obj.attached = ctx end
  function I.Detach(ctx, obj) use(ctx) obj.attached = nil end

  function I.SetNextWindowPos(ctx, x, y, cond) use(ctx).next_pos = { x, y, cond or I.Cond_Always } end
  function I.SetNextWindowSize(ctx, w, h, cond) use(ctx).next_size = { w, h, cond or I.Cond_Always } end
  function I.SetNextWindowDockID(ctx, id, cond) use(ctx).next_dock = { id, cond or I.Cond_Always } end

  local function applies(ctx, first_use, name, what, cond)
    if cond == I.Cond_FirstUseEver then return first_use end
    if cond == I.Cond_Once then
      local k = name .. "/" .. what
      if ctx.once[k] then return false end
      ctx.once[k] = true
    end
    return true
  end

  function I.Begin(ctx, name, p_open, _)
    local fr = use(ctx)
    if fr.window then error("ImGui: Begin inside another window is not modelled") end
    local st = ctx.windows[name]
    -- "no persistently saved data": created for the first time this session, with no saved entry
    local first_use = not ctx.created[name] and not ctx.loaded[name]
    ctx.created[name] = true
    if not st then st = { x = 60, y = 60, w = 400, h = 300, dock = 0 } ctx.windows[name] = st end
    if fr.next_pos and applies(ctx, first_use, name, "pos", fr.next_pos[3]) then
      st.x, st.y = fr.next_pos[1], fr.next_pos[2]
    end
    if fr.next_size and applies(ctx, first_use, name, "size", fr.next_size[3]) then
      st.w, st.h = fr.next_size[1], fr.next_size[2]
    end
    if fr.next_dock and applies(ctx, first_use, name, "dock", fr.next_dock[2]) then st.dock = fr.next_dock[1] end
    fr.next_pos, fr.next_size, fr.next_dock = nil, nil, nil
    local move = table.remove(S.window_moves, 1)
    if move then for k, v in pairs(move) do st[k] = v end end
    fr.window = { name = name, ctx = ctx, st = st }
    fr.window_name = name
    local open = p_open
    if p_open ~= nil and S.close_window then S.close_window = false open = false end
    if S.collapsed then fr.window = nil return false, open end
    return true, open
  end
  function I.End(ctx)
    local fr = use(ctx)
    if not fr.window then error("ImGui: End without a visible Begin (Begin returned false: End must not be called)") end
    if fr.table then error("ImGui: End with a table still open") end
    save_settings(ctx)
    fr.window = nil
  end
  function I.IsWindowDocked(ctx) local fr = use(ctx) return fr.window ~= nil and fr.window.st.dock ~= 0 end
  function I.GetWindowDockID(ctx) local fr = use(ctx) return fr.window and fr.window.st.dock or 0 end
  function I.GetWindowPos(ctx) local fr = use(ctx) return fr.window.st.x, fr.window.st.y end
  function I.GetWindowSize(ctx) local fr = use(ctx) return fr.window.st.w, fr.window.st.h end
  function I.IsWindowFocused(ctx) use(ctx) return true end
  function I.IsWindowAppearing(ctx) use(ctx) return false end

  function I.Text(ctx, text) put_text(use(ctx), "text", text) end
  function I.TextDisabled(ctx, text) put_text(use(ctx), "text", text) end
  function I.TextWrapped(ctx, text) put_text(use(ctx), "text", text) end
  function I.TextColored(ctx, _, text) put_text(use(ctx), "text", text) end
  function I.SameLine(ctx) use(ctx) end
  function I.Separator(ctx) use(ctx) end
  function I.Spacing(ctx) use(ctx) end
  function I.Dummy(ctx) use(ctx) end
  function I.SetNextItemWidth(ctx) use(ctx) end
  function I.SetScrollHereY(ctx) use(ctx) end
  function I.IsItemHovered(ctx) use(ctx) return false end
  function I.SetTooltip(ctx, text) use(ctx) end -- luacheck: ignore 212
  function I.BeginDisabled(ctx, disabled)
    local fr = use(ctx)
    if disabled == nil or disabled then fr.disabled = fr.disabled + 1 else fr.disabled_noop = true end
    fr.disabled_stack = fr.disabled_stack or {}
    fr.disabled_stack[#fr.disabled_stack + 1] = (disabled == nil or disabled)
  end
  function I.EndDisabled(ctx)
    local fr = use(ctx)
    local top = table.remove(fr.disabled_stack or {})
    if top == nil then error("ImGui: EndDisabled without BeginDisabled") end
    if top then fr.disabled = fr.disabled - 1 end
  end
  function I.PushID(ctx, id) local fr = use(ctx) fr.id_stack[#fr.id_stack + 1] = tostring(id) end
  function I.PopID(ctx)
    local fr = use(ctx)
    if #fr.id_stack == 0 then error("ImGui: PopID without PushID") end
    table.remove(fr.id_stack)
  end

  function I.Button(ctx, label) return clicked(use(ctx), "button", label) end
  function I.SmallButton(ctx, label) return clicked(use(ctx), "button", label) end
  function I.Selectable(ctx, label, selected)
    local hit = clicked(use(ctx), "selectable", label)
    if hit then return true, true end
    return false, selected and true or false
  end
  function I.Checkbox(ctx, label, v)
    if clicked(use(ctx), "checkbox", label) then return true, not v end
    return false, v
  end
  function I.RadioButton(ctx, label, _) return clicked(use(ctx), "radio", label) end

  local function typed(fr, label, kind)
    local p = path(fr, label)
    fr.widgets[#fr.widgets + 1] = { kind = kind, label = label, path = p }
    local t = S.typed[1]
    if t and not t.done and (t.label == label or t.label == p or t.label == visible_label(label)) then
      t.done = true
      return true, t.value
    end
    return false
  end
  function I.InputText(ctx, label, buf, _)
    local fr = use(ctx)
    local hit, v = typed(fr, label, "input")
    fr.widgets[#fr.widgets].value = hit and v or buf
    if hit then return true, v end
    return false, buf
  end
  function I.InputTextMultiline(ctx, label, buf) return I.InputText(ctx, label, buf) end
  function I.SliderDouble(ctx, label, v, v_min, v_max)
    local fr = use(ctx)
    local hit, nv = typed(fr, label, "slider")
    fr.widgets[#fr.widgets].value = v
    if hit then
      nv = tonumber(nv)
      return true, math.max(v_min, math.min(v_max, nv))
    end
    return false, v
  end
  function I.Combo(ctx, label, current, items)
    local fr = use(ctx)
    if items:sub(-1) ~= "\0" then error("ImGui.Combo: each item must be null-terminated") end
    local list = {}
    for x in items:gmatch("([^%z]*)%z") do list[#list + 1] = x end
    local hit, v = typed(fr, label, "combo")
    fr.widgets[#fr.widgets].items = list
    fr.widgets[#fr.widgets].value = list[current + 1]
    if hit then
      for i, x in ipairs(list) do if x == v then return true, i - 1 end end
      error("ImGui.Combo " .. label .. ": no item " .. tostring(v))
    end
    return false, current
  end

  function I.ProgressBar(ctx, fraction, _, _, overlay)
    local fr = use(ctx)
    if fraction < 0 or fraction > 1 then error("ProgressBar fraction out of [0, 1]: " .. fraction) end
    put_text(fr, "progress", overlay or string.format("%.0f%%", fraction * 100))
  end

  function I.BeginTable(ctx, id, columns)
    local fr = use(ctx)
    if fr.table then error("ImGui: nested tables are not modelled") end
    fr.table = { id = id, columns = columns, rows = {}, headers = {}, col = 0 }
    return true
  end
  function I.TableSetupColumn(ctx, label) local fr = use(ctx) fr.table.headers[#fr.table.headers + 1] = label end
  function I.TableSetupScrollFreeze(ctx) use(ctx) end
  function I.TableHeadersRow(ctx) use(ctx) end
  function I.TableNextRow(ctx)
    local t = use(ctx).table
    if not t then error("ImGui: TableNextRow outside a table") end
    t.row = {}
    t.rows[#t.rows + 1] = t.row
    t.col = 0
  end
  function I.TableNextColumn(ctx)
    local t = use(ctx).table
    if not t then error("ImGui: TableNextColumn outside a table") end
    if not t.row or t.col >= t.columns then I.TableNextRow(ctx) end
    t.col = t.col + 1
    return true
  end
  function I.EndTable(ctx)
    local fr = use(ctx)
    if not fr.table then error("ImGui: EndTable without BeginTable") end
    fr.tables[fr.table.id] = fr.table
    fr.table = nil
  end

  function I.OpenPopup(ctx, id) use(ctx) S.popups[id] = true end
  function I.BeginPopupModal(ctx, name)
    local fr = use(ctx)
    if not S.popups[name] then return false end
    fr.popup_stack[#fr.popup_stack + 1] = name
    put_text(fr, "popup", name)
    return true
  end
  function I.CloseCurrentPopup(ctx)
    local fr = use(ctx)
    local top = fr.popup_stack[#fr.popup_stack]
    if not top then error("ImGui: CloseCurrentPopup outside a popup") end
    S.popups[top] = nil
  end
  function I.EndPopup(ctx)
    local fr = use(ctx)
    if #fr.popup_stack == 0 then error("ImGui: EndPopup without an open popup") end
    table.remove(fr.popup_stack)
  end

  function I.IsKeyPressed(ctx, key)
    use(ctx)
    return S.keys_now[key] == true
  end
  function I.IsAnyItemActive(ctx) use(ctx) return S.typing == true end

  function I.CreateImage(file, _)
    local w, h = png_size(file)
    if not w then error("ImGui.CreateImage: could not load " .. tostring(file) .. ": " .. tostring(h), 2) end
    local img = { kind = "imgui_image", file = file, w = w, h = tonumber(h) }
    S.images[#S.images + 1] = img
    S.images_loaded = S.images_loaded + 1
    return img
  end
  function I.Image_GetSize(img) return img.w, img.h end
  function I.Image(ctx, img, w, h)
    local fr = use(ctx)
    if img.destroyed then error("ImGui.Image: the image is no longer valid") end
    img.used = true
    fr.widgets[#fr.widgets + 1] = { kind = "image", file = img.file, w = w, h = h }
    add_cell(fr, "[image " .. (img.file:match("([^/\\]+)$") or img.file) .. "]")
  end

  -- the shim: require 'imgui' '0.9' returns this table; reaper.ImGui_* are the same functions
  local builtin = scenario.imgui_builtin_path
  function R.ImGui_GetBuiltinPath() return builtin end
  function R.ImGui__fake(version)
    if tonumber(tostring(version):match("^(%d+%.%d+)")) > 0.9 then error("the fake models API 0.9") end
    return I
  end
  for k, v in pairs(I) do R["ImGui_" .. k] = v end

  -- driving
  function M.queue_click(target) S.clicks[#S.clicks + 1] = { target = target } end
  function M.queue_key(name) S.keys[#S.keys + 1] = assert(KEYS[name], "no key " .. tostring(name)) end
  function M.queue_type(label, value) S.typed[#S.typed + 1] = { label = label, value = value } end
  function M.queue_window(changes) S.window_moves[#S.window_moves + 1] = changes end

  -- Called by the fake REAPER around each defer cycle.
  function M.begin_cycle()
    S.keys_now = {}
    local k = table.remove(S.keys, 1)
    if k then S.keys_now[k] = true end
    for _, ctx in ipairs(S.contexts) do ctx.used = false end
    for _, img in ipairs(S.images) do img.used = false end
  end
  function M.end_cycle()
    local errors = {}
    local fr = S.frame
    S.frame = nil
    if fr then
      if fr.window then errors[#errors + 1] = "ImGui: a window was begun but not ended in this frame" end
      if #fr.id_stack > 0 then errors[#errors + 1] = "ImGui: PushID without PopID in this frame" end
      S.last_frame = fr
    end
    for _, ctx in ipairs(S.contexts) do if not ctx.used then ctx.destroyed = true end end
    for _, img in ipairs(S.images) do if not img.used and not img.attached then img.destroyed = true end end
    local c = S.clicks[1]
    if c then
      table.remove(S.clicks, 1)
      if not c.done then errors[#errors + 1] = "ImGui: no widget to click: " .. c.target end
    end
    local t = S.typed[1]
    if t then
      table.remove(S.typed, 1)
      if not t.done then errors[#errors + 1] = "ImGui: no field to type into: " .. t.label end
    end
    if #errors > 0 then error(table.concat(errors, "; "), 0) end
  end

  function F.imgui_dump(lib)
    local fr = S.last_frame or { widgets = {}, tables = {}, texts = {} }
    local tables = lib.object()
    for id, t in pairs(fr.tables) do
      local rows = lib.array()
      for _, r in ipairs(t.rows) do
        local cells = lib.array()
        for c = 1, t.columns do cells[c] = table.concat(r[c] or {}, " | ") end
        rows[#rows + 1] = cells
      end
      tables[id] = { headers = lib.array(t.headers), rows = rows }
    end
    local widgets = lib.array()
    for _, w in ipairs(fr.widgets) do
      local x = lib.object()
      for k, v in pairs(w) do if type(v) ~= "table" then x[k] = v end end
      widgets[#widgets + 1] = x
    end
    local windows = lib.object()
    for _, ctx in ipairs(S.contexts) do
      for name, st in pairs(ctx.windows) do
        windows[name] = { x = st.x, y = st.y, w = st.w, h = st.h, dock = st.dock }
      end
    end
    return { texts = lib.array(fr.texts), tables = tables, widgets = widgets, windows = windows,
             images_loaded = S.images_loaded, contexts = #S.contexts }
  end
  return I
end

return M
