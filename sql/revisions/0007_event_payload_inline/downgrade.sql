-- Revision 0007 down: the default toast_tuple_target again (new rows only; rows
-- stored inline stay inline, which both revisions read alike).
ALTER TABLE public.stripe_events RESET (toast_tuple_target);
