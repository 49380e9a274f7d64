-- wrk script for the full chain (bench/run.py): every request carries a client's DPoP-bound
-- access token and a distinct, pre-minted DPoP proof of that client's key.
--   wrk ... -s bench/proofs.lua URL -- TOKENS PROOFS
-- TOKENS: one access token per line (client i = line i + 1).
-- PROOFS: lines `<client index> <proof>`; a regular file (read into memory at start) or a
-- FIFO that a minter keeps filling (the soak: read line by line as requests go out).
local tokens = {}
local proofs = nil
local stream = nil
local next_proof = 1
local path = nil

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = "DPoP " .. line
  end
  local f = assert(io.open(args[2], "r"))
  -- A FIFO cannot be read to its end first: stream it.
  local kind = io.popen("stat -L -c %F " .. args[2]):read("*l")
  if kind == "fifo" then
    stream = f
  else
    proofs = {}
    for line in f:lines() do
      proofs[#proofs + 1] = line
    end
    f:close()
  end
  path = wrk.path
end

local function take()
  if stream then
    return stream:read("*l")
  end
  local line = proofs[next_proof]
  next_proof = next_proof + 1
  return line
end

function request()
  local line = take()
  if not line then
    io.stderr:write("proofs.lua: out of proofs\n")
    os.exit(3)
  end
  local sp = line:find(" ", 1, true)
  local client = tonumber(line:sub(1, sp - 1))
  return wrk.format("GET", path, { ["Authorization"] = tokens[client + 1], ["DPoP"] = line:sub(sp + 1) })
end
