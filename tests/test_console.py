"""The commands' logging set-up: plain lines where the print calls used to write them."""
import logging

from jobspec.console import configure_logging


def test_status_lines_are_plain_and_go_where_the_package_writes_them(capsys):
    configure_logging()
    logging.getLogger("orchestrator.cluster.suite").info("suite s: 2 jobs")
    logging.getLogger("orchestrator.cli.main").error("resolab: config error")
    logging.getLogger("analysis.make_tables").info("quickstart: logged under tables/")  # stdout is the tables'
    out, err = capsys.readouterr()
    assert out == "suite s: 2 jobs\n"
    assert err == "resolab: config error\nquickstart: logged under tables/\n"


def test_configured_twice_each_line_is_shown_once_and_debug_only_when_asked(capsys):
    configure_logging()
    configure_logging()  # a second command in the same process (main(argv) in the tests)
    log = logging.getLogger("orchestrator.engine.loop")
    log.info("epoch 1: loss=2")
    log.debug("hidden")
    assert capsys.readouterr().out == "epoch 1: loss=2\n"
    configure_logging(debug=True)
    try:
        log.debug("shown")
        assert capsys.readouterr().out == "shown\n"
    finally:
        configure_logging()


def test_records_still_reach_the_root_logger(caplog):
    configure_logging()
    with caplog.at_level(logging.INFO):
        logging.getLogger("analysis.report").warning("per-image predictions x not found")
    assert "not found" in caplog.text


def test_a_command_shows_its_lines_after_another_library_configured_logging(capsys):
    # What logging.config.dictConfig does to every logger that exists when it runs (import-linter calls it).
    logging.getLogger("orchestrator.cluster.suite").disabled = True
    configure_logging()
    logging.getLogger("orchestrator.cluster.suite").info("suite s: 2 jobs")
    assert capsys.readouterr().out == "suite s: 2 jobs\n"
