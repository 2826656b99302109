-- Stores an inbound message with its conversation and ticket, once, in one round trip (the
-- worker's busiest step; see store.record_inbound). Returns no row when (channel,
-- channel_message_id) is already stored. Status and author numbers come from the caller, so the
-- contract's enums stay the one source of them.
CREATE FUNCTION record_inbound(
    p_customer text,
    p_channel smallint,
    p_channel_message_id text,
    p_text text,
    p_subject text,
    p_received_time timestamptz,
    p_ticket_reference text,
    p_category smallint,
    p_priority smallint,
    p_reply_context jsonb,
    p_allowed_channels smallint[],
    p_idle interval,
    p_new_conversation_id text,
    p_new_ticket_id text,
    p_author smallint,
    p_status_open smallint,
    p_status_in_progress smallint,
    p_status_resolved smallint
) RETURNS TABLE (ticket_id text, conversation_id text, message_id bigint, ticket_status smallint, new_ticket boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_conversation text;
    v_ticket text;
    v_status smallint;
    v_message bigint;
    v_new_ticket boolean;
BEGIN
    -- One customer's messages are handled in order by one worker; the lock covers a second
    -- replica or a rebalance handing the same customer over mid-message.
    PERFORM pg_advisory_xact_lock(hashtext(p_customer));
    IF EXISTS (SELECT 1 FROM inbound i WHERE i.channel = p_channel AND i.channel_message_id = p_channel_message_id) THEN
        RETURN;
    END IF;

    SELECT c.id INTO v_conversation
    FROM conversations c
    WHERE c.customer = p_customer AND c.state = 'active' AND c.last_activity_time > now() - p_idle
      AND NOT EXISTS (SELECT 1 FROM messages m
                      WHERE m.conversation_id = c.id AND NOT (m.channel = ANY (p_allowed_channels)))
    ORDER BY c.last_activity_time DESC
    LIMIT 1;
    IF v_conversation IS NULL THEN
        v_conversation := p_new_conversation_id;
        INSERT INTO conversations (id, customer) VALUES (v_conversation, p_customer);
    ELSE
        UPDATE conversations c SET last_activity_time = now() WHERE c.id = v_conversation;
    END IF;

    IF p_ticket_reference <> '' THEN
        SELECT t.id INTO v_ticket FROM tickets t WHERE t.id = p_ticket_reference;
    ELSE
        -- A follow-up while the latest ticket is still being handled (or waits for a person)
        -- belongs to that ticket; after a resolution the next question opens a new one.
        SELECT t.id INTO v_ticket
        FROM tickets t
        WHERE t.conversation_id = v_conversation AND t.status <> p_status_resolved
        ORDER BY t.create_time DESC
        LIMIT 1;
    END IF;
    v_new_ticket := v_ticket IS NULL;
    IF v_new_ticket THEN
        v_ticket := coalesce(nullif(p_ticket_reference, ''), p_new_ticket_id);
        v_status := p_status_in_progress;  -- the agent works on it from now on
        INSERT INTO tickets (id, customer, conversation_id, channel, subject, category, priority, status)
        VALUES (v_ticket, p_customer, v_conversation, p_channel, p_subject, p_category, p_priority, v_status);
    ELSE
        UPDATE tickets t
        SET update_time = now(), version = t.version + 1,
            status = CASE WHEN t.status = p_status_open THEN p_status_in_progress ELSE t.status END
        WHERE t.id = v_ticket
        RETURNING t.status INTO v_status;
    END IF;

    INSERT INTO messages (conversation_id, ticket_id, customer, author, channel, text)
    VALUES (v_conversation, v_ticket, p_customer, p_author, p_channel, p_text)
    RETURNING id INTO v_message;
    INSERT INTO inbound (channel, channel_message_id, ticket_id, message_id, received_time, reply_context)
    VALUES (p_channel, p_channel_message_id, v_ticket, v_message, p_received_time, p_reply_context);
    RETURN QUERY SELECT v_ticket, v_conversation, v_message, v_status, v_new_ticket;
END
$$;
