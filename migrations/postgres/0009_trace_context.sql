-- The W3C trace context (a `traceparent`) of the span that queued each job, so the job's span
-- continues the trace of the call that caused it. NULL when no tracing exporter is configured.
ALTER TABLE jobs ADD COLUMN trace_context TEXT;
