-- @noindex
--[[ Submitting many items (the edit and batch actions share this): one failing item never stops the rest,
and the summary says what was queued and why the others were not. ]]
local M = require("aiedit.core")

-- items: list of MediaItem; params_for(item) -> params table or nil, reason; `areas` optionally maps an
-- item to its list of {ts, te} ranges (razor edits: one job per range), else ts/te apply to all. Returns
-- submitted records and failures {label, reason}. One failing item never stops the rest. Every job that needs
-- no render is in the inbox when this returns (a batch goes to the engine at once, whatever its size).
function M.submit_items(items, params_for, spool, ts, te, areas)
  local ok_list, failed = {}, {}
  for _, item in ipairs(items) do
    local tk = reaper.GetActiveTake(item)
    local label = tk and M.take_name(tk) or "(empty item)"
    local ranges = areas and areas[item] or { { ts, te } }
    for _, range in ipairs(ranges) do
      local params, perr = params_for(item)
      local job, record = nil, perr
      if params then
        local okc, j, r = pcall(M.prepare_job, item, params, spool, range[1], range[2])
        if not okc then job, record = nil, tostring(j) else job, record = j, r end
      end
      if job then
        local written, werr = true, nil
        if record.state ~= "rendering" then written, werr = M.submit(spool, job) end
        if written then
          local proj = reaper.GetItemProjectContext(item)
          M.registry_write(proj, record)
          record.project = proj
          ok_list[#ok_list + 1] = record
        else
          if record.job_file then os.remove(record.job_file) end -- its copy: nothing will send it
          failed[#failed + 1] = { label = label, reason = werr }
        end
      else
        failed[#failed + 1] = { label = label, reason = record }
      end
    end
  end
  if #ok_list > 0 then
    M.registry_bump()
    -- the job list is saved with the project: mark it changed so closing it asks to save
    local marked = {}
    for _, r in ipairs(ok_list) do
      local proj = r.project
      r.project = nil
      if not marked[proj] then marked[proj] = true reaper.MarkProjectDirty(proj) end
    end
  end
  return ok_list, failed
end

-- The optional job fields for one item (docs/protocol.md): the model the dialog chose (absent = the daemon's
-- default), the lyrics / key / language it was given for a model that takes them, and the project's tempo and
-- time signature at the item's start (from the tempo map).
function M.job_extra(params, item)
  local extra = {}
  if params.model and params.model ~= "" then extra.model = params.model end
  for k, v in pairs(params.music or {}) do extra[k] = v end
  local proj = reaper.GetItemProjectContext(item)
  for k, v in pairs(M.musical_context(proj, reaper.GetMediaItemInfo_Value(item, "D_POSITION"))) do extra[k] = v end
  return extra
end

-- `params` for each item, with its own extra fields.
function M.params_per_item(params)
  return function(item)
    local p = {}
    for k, v in pairs(params) do p[k] = v end
    p.extra = M.job_extra(params, item)
    return p
  end
end

-- More jobs than this at once are queued only after a question (hundreds of selected items are easy to send by
-- mistake, and each is minutes of engine time).
M.MANY_JOBS = 50

-- How many jobs `items` make (one per item, or per razor area).
function M.count_jobs(items, areas)
  local n = 0
  for _, item in ipairs(items) do n = n + (areas and areas[item] and #areas[item] or 1) end
  return n
end

-- True to go on: below M.MANY_JOBS at once, or when the user says yes to the count.
function M.confirm_many(n, title)
  if n <= M.MANY_JOBS then return true end
  local msg = string.format("Queue %d AI edit jobs?\n\nEach item (or razor area) is one job for the engine; " ..
    "they run one after another on each worker.", n)
  return reaper.ShowMessageBox(msg, title, 4) == 6 -- 4: Yes/No; 6 = Yes
end

function M.summary(ok_list, failed)
  local lines = { string.format("%d job%s queued.", #ok_list, #ok_list == 1 and "" or "s") }
  if #failed > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = string.format("%d item%s not sent:", #failed, #failed == 1 and "" or "s")
    for _, f in ipairs(failed) do lines[#lines + 1] = "  • " .. f.label .. ": " .. f.reason end
  end
  return table.concat(lines, "\n")
end

return M
