"""The tile's control and status registers (``csr_map(cfg)``, docs/tile-design.md §2).

The CSR file owns the registers that live in the network interface (TIMEOUT, RX_ERRORS,
TX_WORDS, RX_WORDS), shows the ones owned elsewhere (controller status, semaphores, NoC drop
counters), turns writes of ``CONTROL`` into commands for the controller and writes of ``SEMn``
into semaphore sets.
"""

from amaranth.hdl import Const, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import bits_for
from ..layouts import ISA_VERSION, SEMAPHORES, ControlCommand, ControlPayload, csr_map
from ..noc.fabric import status_layout
from ..noc.ingress import saturating_add
from .ports import COUNTER_NAMES, controller_status_layout, sem_value_layout
from .semaphores import sem_set_layout

__all__ = ["csr_words", "csr_word_bits", "csr_write_layout", "CsrFile"]


def csr_words(cfg):
    """Words of the CSR space that are mapped."""
    return sum(c.words for c in csr_map(cfg).values())


def csr_word_bits(cfg):
    """Bits of a mapped CSR word address."""
    return bits_for(csr_words(cfg) - 1)


def csr_write_layout(cfg):
    """A write of one CSR word."""
    return data.StructLayout({"word": unsigned(csr_word_bits(cfg)),
                              "data": unsigned(cfg.word_bits)})


class CsrFile(wiring.Component):
    """Reads and writes of the CSR space of tile (``x``, ``y``).

    Writes (``write``, one word per transfer): ``CONTROL`` with command START or RESET goes to
    the controller on ``control`` (the write waits for it to be taken); RESET also zeroes
    RX_ERRORS, TX_WORDS and RX_WORDS (events in its own cycle count after it) and pulses
    ``reset`` (the semaphores clear on it).
    TIMEOUT keeps its value across RESET (it configures the host's watchdog, it counts nothing).
    ``SEMn`` sets semaphore n through ``sem_set``. ``TIMEOUT`` takes each word as written (low
    word first when it spans two). Command NONE is accepted and ignored. A write of a read-only
    register or an invalid command is dropped and flagged on ``write_error`` in the cycle of the
    transfer (the caller counts its packet in RX_ERRORS).

    Reads (``read_word`` / ``read_data``, combinational): registers wider than a word span
    consecutive words, low bits first; reading the first word (``read_en``) snapshots the whole
    register and the other words read the snapshot, so a multi-word read never tears. CONTROL
    reads 0.

    Parameters
    ----------
    cfg : MeshConfig

    Members
    -------
    x, y : ``In(unsigned(cfg.coord_bits))``
        The tile's coordinates (TILE_ID).
    write : ``In(stream.Signature(csr_write_layout(cfg)))``
        ``word`` must be a mapped word (< :func:`csr_words`).
    write_error : ``Out(1)``
        The write offered on ``write`` is refused (read-only register or invalid command).
    read_word : ``In(csr_word_bits(cfg))``
    read_en : ``In(1)``
        A read of ``read_word`` is made in this cycle (takes a snapshot if it is a first word).
    read_data : ``Out(cfg.word_bits)``
    control : ``Out(stream.Signature(ControlPayload))``
        START / RESET to the controller.
    control_refused : ``In(1)``
        Pulse: the controller ignored a START (RX_ERRORS counts it).
    reset : ``Out(1)``
        Pulse: a RESET went to the controller in this cycle.
    timeout : ``Out(32)``
        The TIMEOUT register.
    sem_value : ``In(sem_value_layout())``
    sem_set : ``Out(stream.Signature(sem_set_layout()))``
        A write of ``SEMn`` (always taken by :class:`~tilemesh.tile.semaphores.Semaphores`).
    status : ``In(controller_status_layout(cfg))``
    noc_status : ``In(status_layout())``
        Drop counters of this tile's ingress checker and router.
    rx_errors : ``In(2)``
        Packets rejected in this cycle (0..3), added to RX_ERRORS (saturating).
    rx_word, tx_word : ``In(1)``
        A payload word was written into the tile / sent by it (RX_WORDS / TX_WORDS).
    """

    def __init__(self, cfg):
        self._cfg = cfg
        self._map = csr_map(cfg)
        super().__init__({
            "x": In(unsigned(cfg.coord_bits)),
            "y": In(unsigned(cfg.coord_bits)),
            "write": In(stream.Signature(csr_write_layout(cfg))),
            "write_error": Out(1),
            "read_word": In(csr_word_bits(cfg)),
            "read_en": In(1),
            "read_data": Out(cfg.word_bits),
            "control": Out(stream.Signature(ControlPayload)),
            "control_refused": In(1),
            "reset": Out(1),
            "timeout": Out(32),
            "sem_value": In(sem_value_layout()),
            "sem_set": Out(stream.Signature(sem_set_layout())),
            "status": In(controller_status_layout(cfg)),
            "noc_status": In(status_layout()),
            "rx_errors": In(2),
            "rx_word": In(1),
            "tx_word": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, regs = self._cfg, self._map
        w = cfg.word_bits

        timeout = Signal(32)
        rx_errors = Signal(regs["RX_ERRORS"].bits)
        tx_words = Signal(regs["TX_WORDS"].bits)
        rx_words = Signal(regs["RX_WORDS"].bits)
        m.d.comb += self.timeout.eq(timeout)

        # -- what each register reads ------------------------------------------------------------
        st = self.status
        live = {
            "CONTROL": Const(0, 1),
            "STATUS": st.status.as_value(),
            "PC": st.pc,
            "ERROR": st.error.as_value(),
            "WAIT_SEM": st.wait_sem,
            "WAIT_COUNT": st.wait_count,
            "TIMEOUT": timeout,
            "ISA": Const(ISA_VERSION, 16),
            "RX_ERRORS": rx_errors,
            "TX_WORDS": tx_words,
            "RX_WORDS": rx_words,
        }
        tile_id = Signal(regs["TILE_ID"].shape)
        m.d.comb += [tile_id.x.eq(self.x), tile_id.y.eq(self.y)]
        live["TILE_ID"] = tile_id.as_value()
        live.update({f"SEM{i}": self.sem_value[i] for i in range(SEMAPHORES)})
        live.update({f"AR{i + 1}": st.ar[i] for i in range(len(st.ar))})
        live.update({name.upper(): getattr(st, name) for name in COUNTER_NAMES})
        for group, group_field in status_layout():
            for name, _ in data.Layout.cast(group_field.shape):
                live[f"DROP_{group.upper()}_{name.upper()}"] = self.noc_status[group][name]
        missing = sorted(set(regs) - set(live))
        assert not missing, f"CSR file does not know registers {missing}"  # csr_map grew

        # -- reads -----------------------------------------------------------------------------
        widest = max(c.bits for c in regs.values())
        snapshot = Signal(widest)
        with m.Switch(self.read_word):
            for reg in regs.values():
                value = live[reg.name]
                for part in range(reg.words):
                    with m.Case(reg.word + part):
                        if part == 0:
                            m.d.comb += self.read_data.eq(value[:w])
                            if reg.words > 1:
                                with m.If(self.read_en):
                                    m.d.sync += snapshot.eq(value)
                        else:
                            m.d.comb += self.read_data.eq(snapshot[part * w:(part + 1) * w])

        # -- writes ----------------------------------------------------------------------------
        wr = self.write
        control = self.control
        request = ControlPayload(wr.payload.data[:ControlPayload.as_shape().size])
        command = Signal(ControlCommand)
        m.d.comb += [
            command.eq(request.command),
            control.payload.eq(request),
            self.sem_set.payload.value.eq(wr.payload.data),
        ]
        m.d.comb += wr.ready.eq(1)
        with m.Switch(wr.payload.word):
            for reg in regs.values():
                for part in range(reg.words):
                    with m.Case(reg.word + part):
                        if reg.name == "CONTROL":
                            with m.If((command == ControlCommand.START)
                                      | (command == ControlCommand.RESET)):
                                m.d.comb += [control.valid.eq(wr.valid),
                                             wr.ready.eq(control.ready)]
                            with m.Elif(command != ControlCommand.NONE):
                                m.d.comb += self.write_error.eq(1)
                        elif reg.name == "TIMEOUT":
                            with m.If(wr.valid):
                                m.d.sync += timeout[part * w:(part + 1) * w].eq(wr.payload.data)
                        elif reg.name.startswith("SEM") and reg.name[3:].isdigit():
                            m.d.comb += [self.sem_set.valid.eq(wr.valid),
                                         self.sem_set.payload.sem.eq(int(reg.name[3:]))]
                        else:
                            assert "W" not in reg.access, f"CSR {reg.name} is writable"
                            m.d.comb += self.write_error.eq(1)
            with m.Default():
                m.d.comb += self.write_error.eq(1)

        # -- counters ----------------------------------------------------------------------------
        m.d.comb += self.reset.eq(control.valid & control.ready
                                  & (control.payload.command == ControlCommand.RESET))
        with m.If(self.reset):
            # events of the RESET's own cycle count after it (the RESET write itself is a word
            # written into the tile)
            m.d.sync += [rx_errors.eq(self.rx_errors + self.control_refused),
                         tx_words.eq(self.tx_word), rx_words.eq(self.rx_word)]
        with m.Else():
            saturating_add(m, rx_errors, self.rx_errors + self.control_refused)
            m.d.sync += [tx_words.eq(tx_words + self.tx_word),
                         rx_words.eq(rx_words + self.rx_word)]
        return m
