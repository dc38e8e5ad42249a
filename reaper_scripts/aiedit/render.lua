-- @noindex
--[[ The item as heard -> 32-bit float WAV through REAPER's take audio accessor. ]]
local M = require("aiedit.core")
---------------------------------------------------------------------------------------------
-- Rendering: the item as heard -> a 32-bit float WAV, with REAPER's take audio accessor
---------------------------------------------------------------------------------------------

-- A minimal WAV writer (IEEE float, format 3). `fill(frame0, nframes)` returns a flat table of
-- interleaved samples for the next block.
function M.write_wav_float(path, sr, channels, frames, fill)
  local f, err = io.open(path, "wb")
  if not f then return nil, "cannot write " .. path .. ": " .. tostring(err) end
  local data_bytes = frames * channels * 4
  f:write("RIFF", string.pack("<I4", 4 + 26 + 12 + 8 + data_bytes), "WAVE")
  -- fmt chunk: 18 bytes (cbSize = 0) as non-PCM formats require, then a fact chunk.
  f:write("fmt ", string.pack("<I4I2I2I4I4I2I2I2", 18, 3, channels, sr, sr * channels * 4,
    channels * 4, 32, 0))
  f:write("fact", string.pack("<I4I4", 4, frames))
  f:write("data", string.pack("<I4", data_bytes))
  local block = 4096
  local done = 0
  while done < frames do
    local n = math.min(block, frames - done)
    local samples = fill(done, n)
    local packed = {}
    for i = 1, n * channels do packed[i] = string.pack("<f", samples[i] or 0.0) end
    f:write(table.concat(packed))
    done = done + n
  end
  f:close()
  return path
end

-- Rendering happens in the jobs window's defer loop, a slice per UI tick, so REAPER never freezes:
-- the pure-Lua packing costs about 0.5 s per minute of stereo 48 kHz.
M.RENDER_SECONDS_PER_TICK = 2.0

local function wav_header(sr, channels, frames)
  local data_bytes = frames * channels * 4
  return "RIFF" .. string.pack("<I4", 4 + 26 + 12 + 8 + data_bytes) .. "WAVE" ..
    "fmt " .. string.pack("<I4I2I2I4I4I2I2I2", 18, 3, channels, sr, sr * channels * 4, channels * 4, 32, 0) ..
    "fact" .. string.pack("<I4I4", 4, frames) .. "data" .. string.pack("<I4", data_bytes)
end

-- Starts rendering [0, D_LENGTH] of `take` as the item plays it (playrate, section, reverse, stretch
-- markers applied; take FX and envelopes are refused earlier). The take accessor's time 0 is the item
-- start. Writes `path`.part and renames it to `path` when done (the daemon never sees a partial file).
function M.render_begin(take, sr, channels, length, path)
  local aa = reaper.CreateTakeAudioAccessor(take)
  if not aa then return nil, "REAPER could not open an audio accessor for the take" end
  local part = path .. ".part"
  local f, err = io.open(part, "wb")
  if not f then reaper.DestroyAudioAccessor(aa) return nil, "cannot write " .. part .. ": " .. tostring(err) end
  local frames = math.floor(length * sr + 0.5)
  f:write(wav_header(sr, channels, frames))
  return { aa = aa, f = f, path = path, part = part, sr = sr, ch = channels, frames = frames, done = 0,
           buf = reaper.new_array(4096 * channels) }
end

-- Renders up to `seconds` more audio. Returns true when finished, false when more is left, or nil, error
-- (the partial file is removed).
function M.render_step(r, seconds)
  local budget = math.max(1, math.floor((seconds or M.RENDER_SECONDS_PER_TICK) * r.sr))
  local ok, err = pcall(function()
    while budget > 0 and r.done < r.frames do
      local n = math.min(4096, r.frames - r.done, budget)
      r.buf.clear()
      local rv = reaper.GetAudioAccessorSamples(r.aa, r.sr, r.ch, r.done / r.sr, n, r.buf)
      if rv < 0 then error("audio accessor error") end
      local packed = {}
      for i = 1, n * r.ch do packed[i] = string.pack("<f", r.buf[i] or 0.0) end
      r.f:write(table.concat(packed))
      r.done, budget = r.done + n, budget - n
    end
  end)
  if not ok then M.render_abort(r) return nil, tostring(err) end
  if r.done < r.frames then return false end
  r.f:close()
  r.f = nil
  reaper.DestroyAudioAccessor(r.aa)
  r.aa = nil
  os.remove(r.path)
  local renamed, rerr = os.rename(r.part, r.path)
  if not renamed then os.remove(r.part) return nil, tostring(rerr) end
  return true
end

function M.render_progress(r) return r.frames > 0 and r.done / r.frames or 1 end

function M.render_abort(r)
  if r.f then r.f:close() r.f = nil end
  if r.aa then reaper.DestroyAudioAccessor(r.aa) r.aa = nil end
  os.remove(r.part)
end

return M
