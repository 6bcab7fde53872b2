package redisbusprom

import (
	"github.com/prometheus/client_golang/prometheus"

	redisbus "github.com/redisbus/watermill-redisbus"
	"github.com/redisbus/watermill-redisbus/wsroute"
)

// series is one exported value of a component's Stats.
type series[S any] struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(S) float64
}

func counter[S any](name, help string, value func(S) float64) series[S] {
	return series[S]{prometheus.NewDesc(name, help, []string{"name"}, nil), prometheus.CounterValue, value}
}

func gauge[S any](name, help string, value func(S) float64) series[S] {
	return series[S]{prometheus.NewDesc(name, help, []string{"name"}, nil), prometheus.GaugeValue, value}
}

func collectAll[S any](ch chan<- prometheus.Metric, all []series[S], name string, stats S) {
	for _, s := range all {
		ch <- prometheus.MustNewConstMetric(s.desc, s.kind, s.value(stats), name)
	}
}

func descsOf[S any](all []series[S]) []*prometheus.Desc {
	descs := make([]*prometheus.Desc, len(all))
	for i, s := range all {
		descs[i] = s.desc
	}
	return descs
}

var publisherSeries = []series[redisbus.PublisherStats]{
	counter("redisbus_pubsub_async_failed_messages_total", "Messages an Async Publisher accepted that did not reach Redis.",
		func(s redisbus.PublisherStats) float64 { return float64(s.AsyncFailed) }),
}

var subscriberSeries = []series[redisbus.SubscriberStats]{
	counter("redisbus_pubsub_received_messages_total", "Pub/Sub messages read from Redis.",
		func(s redisbus.SubscriberStats) float64 { return float64(s.Received) }),
	counter("redisbus_pubsub_delivered_messages_total", "Pub/Sub messages handed to Subscribe channels, redeliveries included.",
		func(s redisbus.SubscriberStats) float64 { return float64(s.Delivered) }),
	counter("redisbus_pubsub_acked_messages_total", "Pub/Sub messages acked.",
		func(s redisbus.SubscriberStats) float64 { return float64(s.Acked) }),
	counter("redisbus_pubsub_nacked_messages_total", "Pub/Sub messages nacked.",
		func(s redisbus.SubscriberStats) float64 { return float64(s.Nacked) }),
	counter("redisbus_pubsub_dropped_messages_total", "Pub/Sub messages a full inbox discarded (InboxOverflow).",
		func(s redisbus.SubscriberStats) float64 { return float64(s.Dropped) }),
	counter("redisbus_pubsub_decode_errors_total", "Pub/Sub payloads the Marshaler refused (delivered raw).",
		func(s redisbus.SubscriberStats) float64 { return float64(s.DecodeErrors) }),
	counter("redisbus_pubsub_reconnects_total", "Lost Pub/Sub connections that came back (each a window of loss).",
		func(s redisbus.SubscriberStats) float64 { return float64(s.Reconnects) }),
	counter("redisbus_pubsub_refused_topics_total", "Topics Redis refused to subscribe (NOPERM, wrong password).",
		func(s redisbus.SubscriberStats) float64 { return float64(s.Refused) }),
	counter("redisbus_pubsub_gave_up_messages_total", "Pub/Sub messages dropped after MaxDeliveries nacks.",
		func(s redisbus.SubscriberStats) float64 { return float64(s.GaveUp) }),
	counter("redisbus_pubsub_unsubscribed_topics_total", "Topics unsubscribed after UnsubscribeAfter without a Subscribe.",
		func(s redisbus.SubscriberStats) float64 { return float64(s.Unsubscribed) }),
	gauge("redisbus_pubsub_buffered_messages", "Pub/Sub messages waiting in the Subscriber's inboxes.",
		func(s redisbus.SubscriberStats) float64 { return float64(s.Buffered) }),
	gauge("redisbus_pubsub_last_loss_seconds", "Length of the last window in which the subscription was down (0: none yet).",
		func(s redisbus.SubscriberStats) float64 {
			if s.LastLoss.To.IsZero() {
				return 0
			}
			return s.LastLoss.To.Sub(s.LastLoss.From).Seconds()
		}),
	gauge("redisbus_pubsub_last_loss_end_timestamp_seconds", "When the last window of loss ended, as a Unix time (0: none yet).",
		func(s redisbus.SubscriberStats) float64 {
			if s.LastLoss.To.IsZero() {
				return 0
			}
			return float64(s.LastLoss.To.UnixNano()) / 1e9
		}),
}

var streamsPublisherSeries = []series[redisbus.StreamsPublisherStats]{
	counter("redisbus_streams_scheduled_messages_total", "Messages stored to enter their stream later (Watermill's delay metadata).",
		func(s redisbus.StreamsPublisherStats) float64 { return float64(s.Scheduled) }),
	counter("redisbus_streams_trimmed_entries_total", "Entries the StreamsPublisher trimmed from streams.",
		func(s redisbus.StreamsPublisherStats) float64 { return float64(s.Trimmed) }),
	counter("redisbus_streams_trimmed_unconsumed_entries_total", "Entries a MaxLen or MaxAge cap trimmed before every group consumed them.",
		func(s redisbus.StreamsPublisherStats) float64 { return float64(s.TrimmedUnconsumed) }),
}

var streamsSubscriberSeries = []series[redisbus.StreamsSubscriberStats]{
	counter("redisbus_streams_read_entries_total", "Entries read: new, own pending resumed and claimed.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Read) }),
	counter("redisbus_streams_claimed_entries_total", "Entries taken over from other consumers.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Claimed) }),
	counter("redisbus_streams_delivered_messages_total", "Messages handed to Subscribe channels, redeliveries included.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Delivered) }),
	counter("redisbus_streams_acked_messages_total", "Messages acked (XACK).",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Acked) }),
	counter("redisbus_streams_nacked_messages_total", "Messages nacked (redelivered with backoff).",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Nacked) }),
	counter("redisbus_streams_dead_lettered_entries_total", "Entries moved to a dead-letter stream (undecodable, or MaxDeliveries reached).",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.DeadLettered) }),
	counter("redisbus_streams_dead_letter_failures_total", "Dead letters Redis refused (full, wrong type); the entry stays pending and is tried again.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.DeadLetterFailures) }),
	counter("redisbus_streams_lost_entries_total", "Held entries another consumer claimed meanwhile.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Lost) }),
	counter("redisbus_streams_released_entries_total", "Entries handed back to the group unhandled.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Released) }),
	counter("redisbus_streams_trimmed_pending_entries_total", "Pending entries trimmed or deleted from their stream before they were handled.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Trimmed) }),
	gauge("redisbus_streams_held_entries", "Entries in memory now, read and not yet acked in Redis.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Held) }),
	counter("redisbus_streams_delayed_moved_messages_total", "Delayed messages this subscriber moved into their streams once due.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.DelayedMoved) }),
	gauge("redisbus_streams_delayed_max_lateness_seconds", "The latest any delayed message was moved after its due time, since the subscriber started.",
		func(s redisbus.StreamsSubscriberStats) float64 { return s.MaxDelayedLateness.Seconds() }),
	counter("redisbus_streams_rescheduled_messages_total", "Nacked messages whose handler asked for a later delivery (a delay in their metadata), stored as delayed messages.",
		func(s redisbus.StreamsSubscriberStats) float64 { return float64(s.Rescheduled) }),
}

var nodeSeries = []series[wsroute.Stats]{
	gauge("redisbus_wsroute_connections", "WebSocket connections on the node.",
		func(s wsroute.Stats) float64 { return float64(s.Connections) }),
	counter("redisbus_wsroute_routed_messages_total", "Messages this node sent that reached at least one node.",
		func(s wsroute.Stats) float64 { return float64(s.Routed) }),
	counter("redisbus_wsroute_offline_messages_total", "Messages to a client or room with no live registration.",
		func(s wsroute.Stats) float64 { return float64(s.Offline) }),
	counter("redisbus_wsroute_unreachable_messages_total", "Messages whose owners were registered but not listening.",
		func(s wsroute.Stats) float64 { return float64(s.Unreachable) }),
	counter("redisbus_wsroute_reaped_registrations_total", "Stale registrations this node removed.",
		func(s wsroute.Stats) float64 { return float64(s.Reaped) }),
	counter("redisbus_wsroute_received_messages_total", "Routed messages that reached this node.",
		func(s wsroute.Stats) float64 { return float64(s.Received) }),
	counter("redisbus_wsroute_delivered_messages_total", "Messages queued to local connections.",
		func(s wsroute.Stats) float64 { return float64(s.Delivered) }),
	counter("redisbus_wsroute_dropped_messages_total", "Messages slow local clients lost (DropOldest).",
		func(s wsroute.Stats) float64 { return float64(s.Dropped) }),
	counter("redisbus_wsroute_disconnected_clients_total", "Slow local clients closed (Disconnect, or a write timeout).",
		func(s wsroute.Stats) float64 { return float64(s.Disconnected) }),
	counter("redisbus_wsroute_fenced_messages_total", "Messages for a connection no longer here.",
		func(s wsroute.Stats) float64 { return float64(s.Fenced) }),
	counter("redisbus_wsroute_inbound_frames_total", "Frames from local clients published to Inbound.",
		func(s wsroute.Stats) float64 { return float64(s.Inbound) }),
	counter("redisbus_wsroute_inbound_failed_frames_total", "Frames from local clients that could not be published.",
		func(s wsroute.Stats) float64 { return float64(s.InboundFailed) }),
	counter("redisbus_wsroute_registrations_restored_total", "Times the node found its registrations gone and wrote them again.",
		func(s wsroute.Stats) float64 { return float64(s.RegistrationsRestored) }),
	counter("redisbus_wsroute_liveness_renewals_total", "Renewals of the node's liveness key.",
		func(s wsroute.Stats) float64 { return float64(s.LivenessRenewed) }),
	counter("redisbus_wsroute_liveness_failures_total", "Renewals of the node's liveness key that failed.",
		func(s wsroute.Stats) float64 { return float64(s.LivenessFailed) }),
	counter("redisbus_wsroute_registrations_refused_total", "Connections closed because Redis did not take their registration.",
		func(s wsroute.Stats) float64 { return float64(s.RegistrationsRefused) }),
	counter("redisbus_wsroute_ping_timeouts_total", "Connections closed for not answering a ping within PongTimeout (half-open, or not reading).",
		func(s wsroute.Stats) float64 { return float64(s.PingTimeouts) }),
	counter("redisbus_wsroute_too_many_connections_total", "Connections refused because their client had MaxConnectionsPerClient already.",
		func(s wsroute.Stats) float64 { return float64(s.TooManyConnections) }),
	counter("redisbus_wsroute_rate_limited_clients_total", "Connections closed for sending frames faster than InboundRate.",
		func(s wsroute.Stats) float64 { return float64(s.RateLimited) }),
	counter("redisbus_wsroute_kept_messages_total", "Messages this node sent that were kept in a history (Config.History, WithHistory).",
		func(s wsroute.Stats) float64 { return float64(s.Kept) }),
	counter("redisbus_wsroute_recovered_streams_total", "Streams wsroute.v1 connections asked to recover and got everything they missed.",
		func(s wsroute.Stats) float64 { return float64(s.Recovered) }),
	counter("redisbus_wsroute_recovery_failed_streams_total", "Streams whose connections were told they could not recover (history trimmed, expired or lost).",
		func(s wsroute.Stats) float64 { return float64(s.RecoveryFailed) }),
	counter("redisbus_wsroute_replayed_messages_total", "Messages sent to connections from a history: recoveries and gaps filled.",
		func(s wsroute.Stats) float64 { return float64(s.Replayed) }),
	counter("redisbus_wsroute_duplicate_messages_total", "Live messages not sent to a connection because it had them already.",
		func(s wsroute.Stats) float64 { return float64(s.Duplicates) }),
}

func collectPublisher(ch chan<- prometheus.Metric, name string, s redisbus.PublisherStats) {
	collectAll(ch, publisherSeries, name, s)
}

func collectSubscriber(ch chan<- prometheus.Metric, name string, s redisbus.SubscriberStats) {
	collectAll(ch, subscriberSeries, name, s)
}

func collectStreamsPublisher(ch chan<- prometheus.Metric, name string, s redisbus.StreamsPublisherStats) {
	collectAll(ch, streamsPublisherSeries, name, s)
}

func collectStreamsSubscriber(ch chan<- prometheus.Metric, name string, s redisbus.StreamsSubscriberStats) {
	collectAll(ch, streamsSubscriberSeries, name, s)
}

func collectNode(ch chan<- prometheus.Metric, name string, s wsroute.Stats) {
	collectAll(ch, nodeSeries, name, s)
}

// allDescs lists every series the collector may export.
func allDescs() []*prometheus.Desc {
	var descs []*prometheus.Desc
	descs = append(descs, descsOf(publisherSeries)...)
	descs = append(descs, descsOf(subscriberSeries)...)
	descs = append(descs, descsOf(streamsPublisherSeries)...)
	descs = append(descs, descsOf(streamsSubscriberSeries)...)
	descs = append(descs, descsOf(nodeSeries)...)
	return append(descs, viewDescs()...)
}
