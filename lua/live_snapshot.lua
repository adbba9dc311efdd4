-- live_snapshot.lua: publishes the current availability of some products on the store's
-- live channel, in the message format of publish_change (hold_lib.lua). The live feed
-- asks for it when it starts watching a product and after it reconnects: the values then
-- reach it through the same channel, in order with every change, so a change published
-- before the snapshot can never land after it.
-- Runs after hold_lib.lua (KEYS[1..STORE_KEYS] are the store's keys described there).
--
-- ARGV[1..]  product ids
-- Reply: the number of products published.

publish_change('-', '-', '-', ARGV)
return #ARGV
