-- @noindex
--[[ The jobs window on ReaImGui: a table of jobs (item, prompt, model, mode, strengths with scores, state,
progress with time so far and an estimate, worker), Clear finished, Retry failed, Cancel and Cancel all (after a
question); a finished job's takes with their scores and spectrograms, to play alone (A/B against the original while
it plays) and keep. Docking, position and size come back after a restart; Space reaches REAPER's play/stop; the
arrow keys move between rows. ]]
local M = require("aiedit.core")

local TITLE = "AI edit jobs"
local CANCEL_ALL = "Cancel all jobs?"
local PLAY_STOP = 40044 -- Transport: Play/stop

-- Dock, position and size as saved: ReaImGui keeps them itself (its ini file), unless the user turned that off;
-- the same values in ExtState cover that case (applied only when ReaImGui has none: Cond_FirstUseEver).
local function saved_geometry()
  local s = reaper.GetExtState(M.SECTION, "jobs_window")
  local dock, x, y, w, h = s:match("^(-?%d+) (-?[%d.]+) (-?[%d.]+) ([%d.]+) ([%d.]+)$")
  if not dock then return nil end
  return { dock = tonumber(dock), x = tonumber(x), y = tonumber(y), w = tonumber(w), h = tonumber(h) }
end

local function remember_geometry(ui, ImGui, ctx)
  local dock = ImGui.GetWindowDockID(ctx)
  local g = ui.geometry or { x = 80, y = 80, w = 980, h = 420 }
  if not ImGui.IsWindowDocked(ctx) then
    g.x, g.y = ImGui.GetWindowPos(ctx)
    g.w, g.h = ImGui.GetWindowSize(ctx)
  end
  g.dock = dock
  ui.geometry = g
  local s = string.format("%d %.0f %.0f %.0f %.0f", dock, g.x, g.y, g.w, g.h)
  if s ~= ui.geometry_saved then
    ui.geometry_saved = s
    reaper.SetExtState(M.SECTION, "jobs_window", s, true)
  end
end

-- A spectrogram as an image attached to the window's context (loaded once; nil when missing or unreadable).
local function image(ui, path)
  if type(path) ~= "string" or path == "" then return nil end
  local img = ui.images[path]
  if img == nil then
    img = false
    if M.file_exists(path) then
      local ok, got = pcall(ui.ImGui.CreateImage, path)
      if ok and got then
        ui.ImGui.Attach(ui.ctx, got)
        img = got
      end
    end
    ui.images[path] = img
  end
  return img or nil
end

local function draw_image(ui, path, height)
  local img = image(ui, path)
  if not img then return false end
  local w, h = ui.ImGui.Image_GetSize(img)
  ui.ImGui.Image(ui.ctx, img, w * height / math.max(1, h), height)
  return true
end

-- The finished job's status (scores, pictures), read once: kept from the import, else from the spool.
local function row_status(e)
  if e.status == nil then
    e.status = M.read_status(e.record) or false
  end
  return e.status or nil
end

local function scores_text(s)
  if type(s) ~= "table" then return "" end
  local function f(v) v = tonumber(M.val(v)) return v and string.format("%.2f", v) or "–" end
  return string.format("text %s · audio %s · sum %s", f(s.text), f(s.audio), f(s.sum))
end

local function engine_text(ui)
  local eng = ui.engine
  if not eng then return "Engine not running: start it with  " .. M.start_command(ui.spool) end
  return "Engine running · model " .. tostring(M.val(eng.model) or "?") .. M.workers_text(eng)
end

local function draw_takes(ui, e)
  local ImGui, ctx, r = ui.ImGui, ui.ctx, e.record
  local results = M.row_results(e)
  local st = row_status(e)
  ImGui.Separator(ctx)
  ImGui.Text(ctx, string.format("Takes of %s — “%s”", r.label ~= "" and r.label or r.id, r.prompt or ""))
  if #results == 0 then
    ImGui.TextDisabled(ctx, "No AI takes of this job on its item (deleted, or its item is gone).")
    return
  end
  if st and draw_image(ui, M.val(st.input_spectrogram), 48) then
    ImGui.SameLine(ctx)
    ImGui.Text(ctx, "the input")
  end
  local a = ui.audition
  if ImGui.BeginTable(ctx, "takes", 4, ImGui.TableFlags_RowBg | ImGui.TableFlags_Borders) then
    ImGui.TableSetupColumn(ctx, "Take")
    ImGui.TableSetupColumn(ctx, "Scores")
    ImGui.TableSetupColumn(ctx, "Picture")
    ImGui.TableSetupColumn(ctx, "")
    ImGui.TableHeadersRow(ctx)
    for k, x in ipairs(results) do
      ImGui.PushID(ctx, "take" .. k)
      ImGui.TableNextRow(ctx)
      ImGui.TableNextColumn(ctx)
      local marks = (x.best and " ★ best" or "") .. (r.kept == x.index and " · kept" or "")
      ImGui.Text(ctx, string.format("η=%.2f%s", x.eta or 0, marks))
      ImGui.TableNextColumn(ctx)
      local t = st and M.val(st.takes) and M.val(st.takes)[x.index + 1]
      ImGui.Text(ctx, scores_text(t and M.val(t.scores) or x.scores))
      ImGui.TableNextColumn(ctx)
      if not (t and draw_image(ui, M.val(t.spectrogram), 48)) then ImGui.TextDisabled(ctx, "no picture") end
      ImGui.TableNextColumn(ctx)
      local playing = a and a.e == e and a.k == k
      if ImGui.SmallButton(ctx, playing and "Stop" or "Play") then
        if playing then M.audition_stop(ui) else M.audition_start(ui, e, k) end
      end
      ImGui.SameLine(ctx)
      if ImGui.SmallButton(ctx, "Keep") then M.keep(ui, e, k) end
      ImGui.PopID(ctx)
    end
    ImGui.EndTable(ctx)
  end
  if a and a.e == e then
    ImGui.Text(ctx, string.format("Playing η=%.2f over its item: now the %s. A: switch original/take · Space: stop",
      a.res.eta or 0, a.showing == "take" and "AI take" or "original"))
    if ImGui.Button(ctx, "A/B") then M.audition_ab(ui) end
  end
end

local function draw_rows(ui)
  local ImGui, ctx = ui.ImGui, ui.ctx
  local now = os.time()
  local flags = ImGui.TableFlags_Resizable | ImGui.TableFlags_RowBg | ImGui.TableFlags_Borders |
    ImGui.TableFlags_ScrollY
  if not ImGui.BeginTable(ctx, "jobs", 9, flags, 0, ui.sel > 0 and 180 or -60) then return end
  ImGui.TableSetupScrollFreeze(ctx, 0, 1)
  for _, h in ipairs({ "Item", "Prompt", "Model", "Mode", "Strengths", "State", "Progress", "Worker", "" }) do
    ImGui.TableSetupColumn(ctx, h)
  end
  ImGui.TableHeadersRow(ctx)
  for i, e in ipairs(ui.rows) do
    local r = e.record
    ImGui.PushID(ctx, r.id)
    ImGui.TableNextRow(ctx)
    ImGui.TableNextColumn(ctx)
    if ui.sel == i and ui.scroll_to_sel then ImGui.SetScrollHereY(ctx) ui.scroll_to_sel = false end
    local flags_sel = ImGui.SelectableFlags_SpanAllColumns | ImGui.SelectableFlags_AllowOverlap
    if ImGui.Selectable(ctx, (r.label ~= "" and r.label or r.id) .. "##row", ui.sel == i, flags_sel) then
      ui.sel = i
      M.show_row_item(ui, e)
    end
    ImGui.TableNextColumn(ctx)
    ImGui.Text(ctx, r.prompt or "")
    ImGui.TableNextColumn(ctx)
    ImGui.Text(ctx, r.model or "default")
    ImGui.TableNextColumn(ctx)
    ImGui.Text(ctx, r.mode or "")
    ImGui.TableNextColumn(ctx)
    ImGui.Text(ctx, M.strengths_text(r))
    ImGui.TableNextColumn(ctx)
    ImGui.Text(ctx, M.state_text(r))
    ImGui.TableNextColumn(ctx)
    local p = math.max(0, math.min(1, r.state == "rendering" and (r.progress or 0) * 20 or (r.progress or 0)))
    if not M.ACTIVE[r.state] and r.state == "imported" then p = 1 end
    ImGui.ProgressBar(ctx, p, -1, 0, M.progress_text(r, now))
    ImGui.TableNextColumn(ctx)
    ImGui.Text(ctx, r.worker or "")
    ImGui.TableNextColumn(ctx)
    if M.ACTIVE[r.state] and r.state ~= "cancelling" then
      if ImGui.SmallButton(ctx, "Cancel") then M.request_cancel(ui, e) end
    elseif r.state == "failed" or r.state == "cancelled" then
      if ImGui.SmallButton(ctx, "Retry") then M.retry(ui, e) end
    elseif r.state == "imported" then
      if ImGui.SmallButton(ctx, "Takes") then ui.sel = i end
    end
    ImGui.PopID(ctx)
  end
  ImGui.EndTable(ctx)
end

local function draw_cancel_all(ui)
  local ImGui, ctx = ui.ImGui, ui.ctx
  if not ImGui.BeginPopupModal(ctx, CANCEL_ALL, nil, ImGui.WindowFlags_AlwaysAutoResize) then return end
  local n = M.cancellable(ui)
  ImGui.Text(ctx, string.format("Cancel the %d running AI edit job%s? Finished takes stay.", n, n == 1 and "" or "s"))
  if ImGui.Button(ctx, "Cancel all jobs") then
    M.cancel_all(ui)
    ImGui.CloseCurrentPopup(ctx)
  end
  ImGui.SameLine(ctx)
  if ImGui.Button(ctx, "Keep them") then ImGui.CloseCurrentPopup(ctx) end
  ImGui.EndPopup(ctx)
end

-- Keys while the window has the keyboard and no text field is being edited: Space = REAPER's play/stop (an
-- audition stops with it), Up/Down = rows, A = A/B while a take plays, Enter = play the selected job's best take,
-- Escape = stop the audition.
local function keys(ui)
  local ImGui, ctx = ui.ImGui, ui.ctx
  if ImGui.IsAnyItemActive(ctx) then return end
  if ImGui.IsKeyPressed(ctx, ImGui.Key_Space, false) then reaper.Main_OnCommand(PLAY_STOP, 0) end
  local n = #ui.rows
  if n > 0 and ImGui.IsKeyPressed(ctx, ImGui.Key_DownArrow) then
    ui.sel, ui.scroll_to_sel = math.min(n, ui.sel + 1), true
    M.show_row_item(ui, ui.rows[ui.sel])
  end
  if n > 0 and ImGui.IsKeyPressed(ctx, ImGui.Key_UpArrow) then
    ui.sel, ui.scroll_to_sel = math.max(1, ui.sel - 1), true
    M.show_row_item(ui, ui.rows[ui.sel])
  end
  if ImGui.IsKeyPressed(ctx, ImGui.Key_A, false) then M.audition_ab(ui) end
  if ImGui.IsKeyPressed(ctx, ImGui.Key_Escape, false) then M.audition_stop(ui) end
  local e = ui.rows[ui.sel]
  if e and e.record.state == "imported" and ImGui.IsKeyPressed(ctx, ImGui.Key_Enter, false) then
    local results = M.row_results(e)
    for k, x in ipairs(results) do if x.best then M.audition_start(ui, e, k) return end end
    if results[1] then M.audition_start(ui, e, 1) end
  end
end

local function draw(ui)
  local ImGui, ctx = ui.ImGui, ui.ctx
  ImGui.Text(ctx, engine_text(ui))
  if ImGui.Button(ctx, "Clear finished") then M.clear_finished(ui) end
  ImGui.SameLine(ctx)
  if ImGui.Button(ctx, "Retry failed") then
    for _, e in ipairs(ui.rows) do if e.record.state == "failed" then M.retry(ui, e) end end
  end
  ImGui.SameLine(ctx)
  ImGui.BeginDisabled(ctx, M.cancellable(ui) == 0)
  if ImGui.Button(ctx, "Cancel all…") then ImGui.OpenPopup(ctx, CANCEL_ALL) end
  ImGui.EndDisabled(ctx)
  draw_cancel_all(ui)
  if ui.sel > #ui.rows then ui.sel = #ui.rows end
  draw_rows(ui)
  local e = ui.rows[ui.sel]
  if e and e.record.state == "imported" and M.row_alive(ui, e) then draw_takes(ui, e) end
  for i = math.max(1, #ui.messages - 2), #ui.messages do ImGui.TextDisabled(ctx, ui.messages[i]) end
end

function M.run_imgui_window(ui, ImGui)
  ui.ImGui, ui.images = ImGui, {}
  ui.ctx = ImGui.CreateContext(TITLE)
  local geo = saved_geometry()
  local first = true
  reaper.atexit(function() M.close_window(ui) end)
  M.window_tick(ui, reaper.time_precise()) -- the first poll at once: a refused job shows at the first frame
  local function loop()
    if ui.closed then return end
    M.window_tick(ui, reaper.time_precise())
    local ctx = ui.ctx
    if first then
      first = false
      local g = geo or { dock = 0, x = 80, y = 80, w = 980, h = 420 }
      ImGui.SetNextWindowPos(ctx, g.x, g.y, ImGui.Cond_FirstUseEver)
      ImGui.SetNextWindowSize(ctx, g.w, g.h, ImGui.Cond_FirstUseEver)
      if g.dock ~= 0 then ImGui.SetNextWindowDockID(ctx, g.dock, ImGui.Cond_FirstUseEver) end
    end
    local visible, open = ImGui.Begin(ctx, TITLE, true)
    if visible then
      remember_geometry(ui, ImGui, ctx)
      draw(ui)
      keys(ui)
      ImGui.End(ctx)
    end
    if open == false then M.close_window(ui) return end
    reaper.defer(loop)
  end
  reaper.defer(loop)
  return true
end

return M
