-- @noindex
--[[ JSON codec for the protocol files: objects, arrays, strings (escapes, unicode), numbers, true/false/null. ]]
local M = require("aiedit.core")
---------------------------------------------------------------------------------------------
-- JSON (small, strict enough for the protocol: objects, arrays, strings with escapes and
-- unicode, numbers, true/false/null)
---------------------------------------------------------------------------------------------

-- json_null stands for JSON null inside tables (a nil would vanish from a Lua table).
M.null = setmetatable({}, { __tostring = function() return "null" end, __name = "json_null" })
local ARRAY_MT = { __jsontype = "array" }
local OBJECT_MT = { __jsontype = "object" }

function M.array(t) return setmetatable(t or {}, ARRAY_MT) end
function M.object(t) return setmetatable(t or {}, OBJECT_MT) end

local function is_array(t)
  local mt = getmetatable(t)
  if mt and mt.__jsontype then return mt.__jsontype == "array" end
  local n = #t
  if n == 0 then return false end -- an unmarked empty table is an object
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function encode_string(s)
  -- UTF-8 bytes (η, emoji) pass through unchanged: JSON text is UTF-8.
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function encode_number(x)
  if math.type(x) == "integer" then return string.format("%d", x) end
  if x ~= x or x == math.huge or x == -math.huge then error("JSON cannot hold " .. tostring(x)) end
  if x == math.floor(x) and math.abs(x) < 1e15 then return string.format("%.1f", x) end
  -- shortest of %.15g / %.17g that reads back exactly (positions must survive the trip)
  local s = string.format("%.15g", x)
  if tonumber(s) ~= x then s = string.format("%.17g", x) end
  return s
end

local encode_value
local function encode_table(t, depth)
  if depth > 64 then error("JSON nesting too deep") end
  local parts = {}
  if is_array(t) then
    for i = 1, #t do parts[i] = encode_value(t[i], depth + 1) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then error("JSON object keys must be strings") end
    keys[#keys + 1] = k
  end
  table.sort(keys) -- stable output: easier to read and to diff
  for i, k in ipairs(keys) do parts[i] = encode_string(k) .. ":" .. encode_value(t[k], depth + 1) end
  return "{" .. table.concat(parts, ",") .. "}"
end

encode_value = function(v, depth)
  local tv = type(v)
  if v == nil or v == M.null then return "null"
  elseif tv == "boolean" then return v and "true" or "false"
  elseif tv == "number" then return encode_number(v)
  elseif tv == "string" then return encode_string(v)
  elseif tv == "table" then return encode_table(v, depth)
  end
  error("JSON cannot hold a " .. tv)
end

function M.json_encode(v) return encode_value(v, 0) end

local function utf8_char(cp)
  return utf8.char(cp)
end

-- Decoder: a small recursive-descent parser over the string. Errors carry the byte position.
local function decode_error(_, pos, what)
  error(string.format("bad JSON at byte %d: %s", pos, what), 0)
end

local function skip_ws(s, pos)
  return s:find("[^ \t\r\n]", pos) or (#s + 1)
end

local decode_value

local function decode_string(s, pos)
  -- pos is at the opening quote
  local out, i = {}, pos + 1
  while true do
    local j = s:find('["\\%c]', i)
    if not j then decode_error(s, pos, "unterminated string") end
    out[#out + 1] = s:sub(i, j - 1)
    local c = s:sub(j, j)
    if c == '"' then return table.concat(out), j + 1 end
    if c ~= "\\" then decode_error(s, j, "control character in string") end
    local e = s:sub(j + 1, j + 1)
    local simple = ({ ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n',
                      r = '\r', t = '\t' })[e]
    if simple then
      out[#out + 1] = simple
      i = j + 2
    elseif e == "u" then
      local hex = s:match("^%x%x%x%x", j + 2)
      if not hex then decode_error(s, j, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      i = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF then -- surrogate pair: needs the low half
        local lo = s:match("^\\u(%x%x%x%x)", i)
        local lo_cp = lo and tonumber(lo, 16)
        if not lo_cp or lo_cp < 0xDC00 or lo_cp > 0xDFFF then decode_error(s, j, "lone surrogate") end
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo_cp - 0xDC00)
        i = i + 6
      end
      out[#out + 1] = utf8_char(cp)
    else
      decode_error(s, j, "bad escape")
    end
  end
end

local function decode_number(s, pos)
  local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if not num or num == "" or num == "-" then decode_error(s, pos, "bad number") end
  local v = tonumber(num)
  if v and not num:find("[.eE]") then v = math.tointeger(v) or v end -- "3" stays an integer
  if v == nil then decode_error(s, pos, "bad number") end
  return v, pos + #num
end

local function decode_array(s, pos)
  local arr, i = M.array(), skip_ws(s, pos + 1)
  if s:sub(i, i) == "]" then return arr, i + 1 end
  while true do
    local v
    v, i = decode_value(s, i)
    arr[#arr + 1] = v
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "]" then return arr, i + 1 end
    if c ~= "," then decode_error(s, i, "expected , or ]") end
    i = skip_ws(s, i + 1)
  end
end

local function decode_object(s, pos)
  local obj, i = M.object(), skip_ws(s, pos + 1)
  if s:sub(i, i) == "}" then return obj, i + 1 end
  while true do
    if s:sub(i, i) ~= '"' then decode_error(s, i, "expected a key") end
    local k
    k, i = decode_string(s, i)
    i = skip_ws(s, i)
    if s:sub(i, i) ~= ":" then decode_error(s, i, "expected :") end
    local v
    v, i = decode_value(s, skip_ws(s, i + 1))
    obj[k] = v
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "}" then return obj, i + 1 end
    if c ~= "," then decode_error(s, i, "expected , or }") end
    i = skip_ws(s, i + 1)
  end
end

decode_value = function(s, pos)
  pos = skip_ws(s, pos)
  local c = s:sub(pos, pos)
  if c == "{" then return decode_object(s, pos)
  elseif c == "[" then return decode_array(s, pos)
  elseif c == '"' then return decode_string(s, pos)
  elseif c == "-" or c:match("%d") then return decode_number(s, pos)
  elseif s:sub(pos, pos + 3) == "true" then return true, pos + 4
  elseif s:sub(pos, pos + 4) == "false" then return false, pos + 5
  elseif s:sub(pos, pos + 3) == "null" then return M.null, pos + 4
  end
  decode_error(s, pos, "unexpected " .. (c == "" and "end of text" or c))
end

-- Returns value or nil, error message (never raises: callers decide what a bad file means).
function M.json_decode(s)
  if type(s) ~= "string" then return nil, "no text" end
  local ok, v, pos = pcall(decode_value, s, 1)
  if not ok then return nil, v end
  if skip_ws(s, pos) <= #s then return nil, "trailing text after JSON" end
  return v
end

-- JSON null and Lua nil read the same to callers.
function M.val(v) if v == M.null then return nil end return v end

return M
