-- Record UDFs for tests/differential/udf_diff.py: each returns something of one kind, or
-- reads, writes or fails in one way, so two servers' answers can be compared call by call.

function ret_int(rec) return 7 end
function ret_float(rec) return -2.25 end
function ret_str(rec) return "text" end
function ret_nil(rec) return nil end
function ret_bool(rec, b) return b end
function ret_list(rec) return list{1, "a", 2.5} end
function ret_map(rec) return map{a = 1, b = "x"} end
function ret_nested(rec) return map{l = list{1, list{2, 3}}, m = map{k = list{}}} end

function ret_bytes(rec)
  local b = bytes(3)
  bytes.set_byte(b, 1, 65)
  bytes.set_byte(b, 2, 66)
  bytes.set_byte(b, 3, 67)
  return b
end

function echo(rec, a, b, c, d, e, f) return list{a, b, c, d, e, f} end

function get_bin(rec, name) return rec[name] end

function meta(rec)
  return map{gen = record.gen(rec), numbins = record.numbins(rec),
             setname = record.setname(rec), has_digest = record.digest(rec) ~= nil}
end

function names(rec)
  local t = {}
  for _, v in ipairs(record.bin_names(rec)) do t[#t + 1] = v end
  table.sort(t)
  local out = list()
  for _, v in ipairs(t) do list.append(out, v) end
  return out
end

function incr(rec, name, by)
  if not aerospike:exists(rec) then
    return "missing"
  end
  rec[name] = (rec[name] or 0) + by
  aerospike:update(rec)
  return rec[name]
end

function set_bin(rec, name, value)
  rec[name] = value
  aerospike:update(rec)
  return record.numbins(rec)
end

function lists(rec)
  local l = rec["l"]
  local c = list.clone(l)
  list.append(c, 4)
  list.prepend(c, 0)
  local t = list.take(c, 3)
  local d = list.drop(c, 2)
  list.insert(c, 2, 9)
  list.remove(c, 1)
  local m = list.merge(t, d)
  return list{list.size(l), c, t, d, m, l[1], l[3]}
end

function maps(rec)
  local m = rec["m"]
  local c = map.clone(m)
  c["z"] = 26
  map.remove(c, "x")
  local t = {}
  for k in map.keys(c) do t[#t + 1] = k end
  table.sort(t)
  local keys = list()
  for _, k in ipairs(t) do list.append(keys, k) end
  local vals = 0
  for v in map.values(c) do vals = vals + v end
  return list{map.size(m), map.size(c), keys, vals, m["y"], map.merge(m, map{w = 1}, nil)["w"]}
end

function bytes_ops(rec)
  local b = bytes(0)
  bytes.append_string(b, "hi")
  bytes.append_int16(b, 258)
  bytes.append_byte(b, 255)
  return list{bytes.size(b), bytes.get_string(b, 1, 2), bytes.get_int16(b, 3),
              bytes.get_byte(b, 5), b}
end

function strs(rec, s)
  return list{string.upper(s), string.len(s), string.format("%d-%s", 5, s),
              tostring(12), tonumber("42"), math.floor(3.7), math.max(1, 9, 4),
              string.sub(s, 2, 3), s .. "!"}
end

function exists(rec) return aerospike:exists(rec) end

function create(rec, v)
  rec["v"] = v
  local rc = aerospike:create(rec)
  return rc
end

function remove(rec) return aerospike:remove(rec) end

function fail(rec, msg) error(msg) end
function fail_table(rec) error({code = 5}) end
function runtime_error(rec) local t = nil; return t.x end

function write_then_fail(rec)
  rec["i"] = 999
  aerospike:update(rec)
  error("after the write")
end

function touch_meta(rec)
  local g1 = record.gen(rec)
  rec["i"] = rec["i"] + 1
  aerospike:update(rec)
  return list{record.gen(rec) - g1}
end

function types(rec)
  return list{type(rec["i"]), type(rec["s"]), type(rec["l"]), type(rec["m"]),
              type(rec["nope"]), getmetatable(rec["l"]) ~= nil}
end

function bytes_more(rec)
  local b = bytes(0)
  bytes.append_int32_le(b, -2)
  bytes.append_int64(b, 1099511627776)
  bytes.append_int16_le(b, 65535)
  bytes.set_string(b, 15, "xyz")
  local g = bytes.get_bytes(b, 2, 3)
  return list{bytes.get_int32_le(b, 1), bytes.get_int32(b, 1), bytes.get_int64_be(b, 5),
              bytes.get_int16_le(b, 13), bytes.get_int16(b, 13), bytes.get_type(b),
              bytes.size(b), g, bytes.get_byte(b, 99), bytes.get_string(b, 15, 3), b}
end
