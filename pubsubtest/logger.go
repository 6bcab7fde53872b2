package pubsubtest

import (
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
)

// LogEntry is one line a RecordingLogger received.
type LogEntry struct {
	Level  watermill.LogLevel
	Msg    string
	Err    error
	Fields watermill.LogFields
}

// RecordingLogger is a watermill.LoggerAdapter that keeps every entry, so a
// test can assert what was logged. It is safe for concurrent use.
type RecordingLogger struct {
	fields watermill.LogFields
	log    *entryLog
}

type entryLog struct {
	mu      sync.Mutex
	entries []LogEntry
}

// NewRecordingLogger returns an empty RecordingLogger.
func NewRecordingLogger() *RecordingLogger {
	return &RecordingLogger{log: &entryLog{}}
}

func (l *RecordingLogger) record(level watermill.LogLevel, msg string, err error, fields watermill.LogFields) {
	l.log.mu.Lock()
	defer l.log.mu.Unlock()
	l.log.entries = append(l.log.entries, LogEntry{Level: level, Msg: msg, Err: err, Fields: l.fields.Copy().Add(fields)})
}

func (l *RecordingLogger) Error(msg string, err error, fields watermill.LogFields) {
	l.record(watermill.ErrorLogLevel, msg, err, fields)
}

func (l *RecordingLogger) Info(msg string, fields watermill.LogFields) {
	l.record(watermill.InfoLogLevel, msg, nil, fields)
}

func (l *RecordingLogger) Debug(msg string, fields watermill.LogFields) {
	l.record(watermill.DebugLogLevel, msg, nil, fields)
}

func (l *RecordingLogger) Trace(msg string, fields watermill.LogFields) {
	l.record(watermill.TraceLogLevel, msg, nil, fields)
}

func (l *RecordingLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return &RecordingLogger{fields: l.fields.Copy().Add(fields), log: l.log}
}

// Find returns the entries at level whose message contains substr.
func (l *RecordingLogger) Find(level watermill.LogLevel, substr string) []LogEntry {
	l.log.mu.Lock()
	defer l.log.mu.Unlock()
	var found []LogEntry
	for _, e := range l.log.entries {
		if e.Level == level && strings.Contains(e.Msg, substr) {
			found = append(found, e)
		}
	}
	return found
}
