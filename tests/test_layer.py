"""Layers stacked between a transport and a handler: events up, calls down, exactly once."""
from __future__ import annotations

import socket

import pytest

import netmux

from conftest import Echo, Recorder, recv_exactly, recv_until_eof, run_until, wait_until


def test_counting_layer_counts_both_ways_and_changes_nothing(serve):
    counter = netmux.ByteCounter()
    serving = serve(lambda: netmux.CountingLayer(Echo(), counter))
    with serving.connect() as client:
        for size in (1, 1000, 100_000):
            client.sendall(b"x" * size)
            assert recv_exactly(client, size) == b"x" * size
    wait_until(lambda: serving.server.connections == 0)
    assert counter.bytes_in == counter.bytes_out == 101_001


def test_layers_stack_and_each_counts(serve):
    outer, inner = netmux.ByteCounter(), netmux.ByteCounter()
    serving = serve(lambda: netmux.CountingLayer(netmux.CountingLayer(Echo(), inner), outer))
    with serving.connect() as client:
        client.sendall(b"hello")
        assert recv_exactly(client, 5) == b"hello"
    wait_until(lambda: serving.server.connections == 0)
    assert (outer.bytes_in, outer.bytes_out, inner.bytes_in, inner.bytes_out) == (5, 5, 5, 5)


def test_flow_control_passes_through_a_layer_so_an_echo_stays_bounded(serve):
    """A peer that sends and never reads: the buffer below fills, pause_writing goes up,
    the handler's default pauses reading down through the layer."""
    layers = []

    def factory():
        layer = netmux.CountingLayer(Echo())
        layers.append(layer)
        return layer

    serving = serve(factory)
    with serving.connect() as client:
        client.setblocking(False)
        chunk = b"y" * 65536
        sent = 0
        for _ in range(2000):                     # at most 128 MiB, bounded
            try:
                sent += client.send(chunk)
            except BlockingIOError:
                if serving.call(lambda: not layers[0].is_reading()):
                    break
                wait_until(lambda: True, timeout=0.01)
        assert serving.call(lambda: not layers[0].transport.is_reading())
        assert serving.call(lambda: layers[0].get_write_buffer_size()) <= 64 * 1024 + len(chunk) * 4
        assert layers[0].counter.bytes_in < sent + 1


def test_close_flushes_through_the_layer_and_connection_lost_comes_up_once(serve):
    class CloseAfterWrite(Recorder):
        def data_received(self, data):
            self.transport.write(data * 1000)
            self.transport.close()
            self.transport.close()             # idempotent below

    handlers = []

    def factory():
        handlers.append(CloseAfterWrite())
        return netmux.Layer(handlers[-1])

    serving = serve(factory)
    with serving.connect() as client:
        client.sendall(b"abc")
        assert recv_until_eof(client) == b"abc" * 1000
    assert handlers[0].lost_event.wait(5)
    assert handlers[0].events == ["made", "lost"] and handlers[0].lost == [None]


def test_write_eof_and_abort_pass_down(serve):
    class HalfClose(Recorder):
        def data_received(self, data):
            assert self.transport.can_write_eof()
            self.transport.write(b"bye")
            self.transport.write_eof()

    handlers = []
    serving = serve(lambda: netmux.Layer(handlers.append(HalfClose()) or handlers[-1]))
    with serving.connect() as client:
        client.sendall(b"x")
        assert recv_until_eof(client) == b"bye"      # FIN after the flush; still open for reading
        serving.call(lambda: handlers[0].transport.abort())
    assert handlers[0].lost_event.wait(5)
    assert handlers[0].lost == [None]


def test_a_handler_error_above_a_layer_costs_that_connection_only(serve, caplog):
    class Fails(Recorder):
        def data_received(self, data):
            raise ValueError("bad input")

    handlers = []

    def factory():
        handlers.append(Recorder() if handlers else Fails())    # the first one fails
        return netmux.CountingLayer(handlers[-1])

    serving = serve(factory)
    with serving.connect() as bad, serving.connect() as good:
        wait_until(lambda: len(handlers) == 2)         # accepted in the order they connected
        bad.sendall(b"x")
        assert handlers[0].lost_event.wait(5)
        assert isinstance(handlers[0].lost[0], ValueError) and handlers[0].events == ["made", "lost"]
        good.sendall(b"still here")
        wait_until(lambda: handlers[1].data == b"still here")
    assert "bad input" in caplog.text


def test_connection_lost_goes_up_exactly_once_even_if_called_twice_below():
    recorder = Recorder()
    layer = netmux.Layer(recorder)
    layer.connection_lost(None)
    layer.connection_lost(ConnectionResetError())
    assert recorder.lost == [None]


def test_a_layer_that_changes_bytes_must_implement_sendfile():
    class Upper(netmux.Layer):
        def write(self, data):
            self.transport.write(bytes(data).upper())

    with pytest.raises(NotImplementedError, match="sendfile"):
        Upper(Recorder()).sendfile(None)


def test_counting_layer_refuses_what_is_not_bytes_before_counting(reactor):
    left, right = socket.socketpair()
    with left, right:
        layer = netmux.connect_socket(left.dup(), lambda: netmux.CountingLayer(Recorder()),
                                      reactor=reactor)
        run_until(reactor, lambda: layer.transport is not None)
        with pytest.raises(TypeError):
            layer.write("text")
        layer.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
        assert layer.counter.bytes_out == 3
        assert recv_exactly(right, 3) == b"abc"
        layer.abort()
        run_until(reactor, lambda: layer.handler.lost)
