-- sca_rs example routing script for KEMI (app_lua), loaded by
-- cfg-examples/kamailio-sca-kemi.cfg: the routing of kamailio-sca.cfg,
-- authentication and membership always on (docs/security.md).

-- stop the script here (what `exit` does in kamailio.cfg)
local function stop()
    KSR.x.exit()
end

-- is the request's method one of `names` (a set: { INVITE = true, ... })?
local function method_in(names)
    return names[KSR.pv.get("$rm")] == true
end

local CALL_STATE = { BYE = true, CANCEL = true, INVITE = true, PRACK = true, REFER = true }
local WANTS_REPLIES = { INVITE = true, BYE = true, SUBSCRIBE = true, PRACK = true, REFER = true, UPDATE = true }

-- digest authentication against the subscriber table (407 challenge)
local function auth()
    local realm = KSR.pv.get("$fd")
    if KSR.auth_db.auth_check(realm, "subscriber", 0) < 0 then
        KSR.auth.auth_challenge(realm, 0)
        stop()
    end
    KSR.auth.consume_credentials()
end

-- the authenticated user must be a member of `aor`
local function member_of(aor)
    local who = KSR.pv.get("$au") .. "@" .. KSR.pv.get("$ar")
    if KSR.sca.is_member(who, aor) < 0 then
        KSR.notice("SCA: " .. who .. " is not a member of " .. aor .. ": 403\n")
        KSR.sl.sl_send_reply(403, "Forbidden - not a member of this shared line")
        stop()
    end
end

-- call state of shared lines: updates the appearances and NOTIFYs the
-- group; removes the Call-Info header
local function sca()
    if method_in(CALL_STATE) then
        KSR.sca.call_info_update_default()
    end
end

local function relay()
    if method_in(WANTS_REPLIES) then
        if KSR.tm.t_is_set("onreply_route") < 0 then
            KSR.tm.t_on_reply("ksr_onreply_manage")
        end
    end
    if KSR.is_INVITE() and KSR.tm.t_is_set("failure_route") < 0 then
        KSR.tm.t_on_failure("ksr_failure_manage")
    end
    sca()
    if KSR.tm.t_relay() < 0 then
        KSR.sl.sl_reply_error()
    end
    stop()
end

local function within_dialog()
    if KSR.rr.loose_route() > 0 then
        relay()
    end
    if KSR.is_ACK() then
        if KSR.tm.t_check_trans() > 0 then
            KSR.tm.t_relay()
        end
        stop()
    end
    KSR.sl.sl_send_reply(404, "Not here")
    stop()
end

function ksr_request_route()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.sl_send_reply(483, "Too Many Hops")
        stop()
    end

    if KSR.is_OPTIONS() and KSR.is_myself_ruri() and KSR.pv.is_null("$rU") then
        KSR.sl.sl_send_reply(200, "OK")
        stop()
    end

    if KSR.is_CANCEL() then
        if KSR.tm.t_check_trans() > 0 then
            sca()
            KSR.tm.t_relay()
        end
        stop()
    end

    local totag = KSR.siputils.has_totag() > 0

    -- every SUBSCRIBE (in a dialog too: a refresh can seize a line again)
    -- and every new INVITE proves who sends it
    if KSR.is_SUBSCRIBE() or (KSR.is_INVITE() and not totag) then
        auth()
    end

    -- SCA subscriptions, new ones and refreshes / unsubscribes alike: the
    -- AoR is the Request-URI of a new subscription, the To URI of a refresh
    if KSR.is_SUBSCRIBE() then
        local ev = KSR.hdr.get("Event")
        if ev == "call-info" or ev == "line-seize" then
            if totag then
                member_of(KSR.pv.get("$tu"))
            else
                member_of(KSR.pv.get("$ru"))
            end
            KSR.sca.handle_subscribe()
            stop()
        end
        KSR.sl.sl_send_reply(489, "Bad Event")
        stop()
    end

    if totag then
        within_dialog()
    end

    -- absorb retransmissions of initial requests
    KSR.tm.t_check_trans()

    KSR.hdr.remove("Route")
    if KSR.is_INVITE() then
        -- a call from a shared line (it says which line in Call-Info):
        -- only its members may make it
        if KSR.hdr.is_present("Call-Info") > 0 then
            member_of(KSR.pv.get("$fu"))
        end
        KSR.rr.record_route()
    end

    if KSR.is_myself_ruri() then
        -- a member retrieving a held call INVITEs the shared AoR itself;
        -- call_info_update sends it on to the held party
        if KSR.is_INVITE() and KSR.hdr.is_present("Call-Info") > 0 then
            KSR.tm.t_on_reply("ksr_onreply_manage")
            KSR.tm.t_on_failure("ksr_failure_manage")
            sca()
            if not KSR.is_myself_ruri() then
                if KSR.tm.t_relay() < 0 then
                    KSR.sl.sl_reply_error()
                end
                stop()
            end
        end
        -- (a full server would look the callee up in usrloc here)
        KSR.sl.sl_send_reply(404, "Not Found")
        stop()
    end

    -- phones here dial the callee's contact directly
    relay()
end

function ksr_onreply_manage()
    -- failures are handled in the failure route
    local code = KSR.pv.get("$rs")
    if code ~= nil and tonumber(code) >= 400 then
        return 1
    end
    sca()
end

function ksr_failure_manage()
    if KSR.tm.t_is_canceled() > 0 then
        return 1
    end
    sca()
end
