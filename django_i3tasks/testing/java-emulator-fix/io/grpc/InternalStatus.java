/*
 * Replacement for the io.grpc.InternalStatus bundled in the Pub/Sub emulator jar.
 *
 * The jar ships an old InternalStatus next to a newer gRPC server core, which calls
 * asRuntimeException(Status, Metadata, boolean) when a client closes a StreamingPull stream.
 * The missing method makes the server keep the closed stream as a live subscriber. Placed
 * first on the classpath, this class provides the old members and the missing one.
 * Part of django-i3tasks (GPL-3.0-or-later).
 */
package io.grpc;

public final class InternalStatus {
    private InternalStatus() {
    }

    public static final Metadata.Key<String> MESSAGE_KEY = Status.MESSAGE_KEY;

    public static final Metadata.Key<Status> CODE_KEY = Status.CODE_KEY;

    public static StatusRuntimeException asRuntimeExceptionWithoutStacktrace(
            Status status, Metadata trailers) {
        return asRuntimeException(status, trailers, false);
    }

    public static StatusRuntimeException asRuntimeException(
            Status status, Metadata trailers, boolean withStackTrace) {
        if (withStackTrace) {
            return new StatusRuntimeException(status, trailers);
        }
        return new WithoutStackTrace(status, trailers);
    }

    /** A StatusRuntimeException that skips the cost of capturing a stack trace. */
    private static final class WithoutStackTrace extends StatusRuntimeException {
        private static final long serialVersionUID = 1L;

        WithoutStackTrace(Status status, Metadata trailers) {
            super(status, trailers);
        }

        @Override
        public synchronized Throwable fillInStackTrace() {
            return this;
        }
    }
}
