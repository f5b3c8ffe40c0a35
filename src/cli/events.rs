//! `leviathan events verify|tail|export|import|head`.

use std::{
    collections::HashSet,
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use futures::StreamExt;
use leviathan::{
    api::wire::{ChainVerification, HeadResponse},
    core::{
        ChainBreak, ChainFault, ChainVerifier, Event, EventStoreError, Head, Ledger, NewEvent,
        canonical::check_exact_integers, catalogue,
    },
};

use super::{
    error::{CliError, finish},
    output::{init_logging, print_json, progress},
    source::{OutputArgs, SourceArgs},
};

/// Events per read while exporting or tailing.
const PAGE: usize = 2048;
/// Events per append while importing.
const IMPORT_BATCH: usize = 500;

/// Work with the hash-chained event log.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Verify the whole hash chain; exits 1 and prints the first bad seq when it does not verify
    Verify {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show the last events; with --follow, then every new one as it is appended
    Tail {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// How many of the last events to show first
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u64,
        /// Keep printing new events until interrupted
        #[arg(short, long)]
        follow: bool,
    },
    /// Write the log as NDJSON, one full event (with seq and hashes) per line, in seq order
    Export {
        #[command(flatten)]
        source: SourceArgs,
        /// File to write (atomically: complete or not at all); `-` or absent for stdout
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        file: Option<PathBuf>,
        /// Export only events with a seq greater than this
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Read an export back into an EMPTY store; every event must reproduce its exported seq
    /// and hash (the whole file is checked before anything is written)
    Import {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// NDJSON written by `events export`; `-` for stdin
        #[arg(short, long, value_name = "FILE")]
        input: PathBuf,
    },
    /// Show the last event's seq and hash
    Head {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("warn", false);
    finish(match args.command {
        Command::Verify { source, output } => verify(source, output).await,
        Command::Tail {
            source,
            output,
            lines,
            follow,
        } => tail(source, output, lines, follow).await,
        Command::Export {
            source,
            file,
            after,
        } => export(source, file, after).await,
        Command::Import {
            source,
            output,
            input,
        } => import(source, output, &input).await,
        Command::Head { source, output } => head(source, output).await,
    })
}

async fn verify(source: SourceArgs, output: OutputArgs) -> Result<(), CliError> {
    let events = source.open().await?.event_store();
    let bar = progress(None, "verifying the event chain");
    let verdict = match events.verify().await {
        Ok(result) => ChainVerification::from(result),
        // A record that does not even decode is where the chain breaks.
        Err(EventStoreError::Corrupt {
            seq: Some(seq),
            reason,
        }) => ChainVerification::Broken(ChainBreak {
            seq,
            fault: ChainFault::Malformed { reason },
        }),
        Err(other) => return Err(other.into()),
    };
    bar.finish_and_clear();
    if output.json {
        print_json(&verdict)?;
    }
    match verdict {
        ChainVerification::Verified(report) => {
            if !output.json {
                match report.head {
                    Some(head) => println!(
                        "chain verified: {} events, {} bytes, head seq {} hash {}",
                        report.events, report.bytes, head.seq, head.hash
                    ),
                    None => println!("chain verified: the log is empty"),
                }
            }
            Ok(())
        }
        ChainVerification::Broken(broken) => {
            if !output.json {
                println!("chain broken at seq {}: {}", broken.seq, broken.fault);
            }
            Err(CliError::failure(format!(
                "the event chain does not verify (first bad seq {})",
                broken.seq
            )))
        }
    }
}

async fn head(source: SourceArgs, output: OutputArgs) -> Result<(), CliError> {
    let head = source.open().await?.event_store().head().await?;
    if output.json {
        return print_json(&HeadResponse { head });
    }
    match head {
        Some(Head { seq, hash }) => println!("seq {seq} hash {hash}"),
        None => println!("the log is empty"),
    }
    Ok(())
}

fn print_event(event: &Event, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(event);
    }
    println!(
        "{:>8}  {}  {:<26}  {}  {}",
        event.seq,
        event.timestamp,
        event.event_type,
        event.event_id,
        event.actor_id.as_deref().unwrap_or("-")
    );
    Ok(())
}

async fn tail(
    source: SourceArgs,
    output: OutputArgs,
    lines: u64,
    follow: bool,
) -> Result<(), CliError> {
    let events = source.open().await?.event_store();
    let head = events.head().await?.map_or(0, |h| h.seq);
    let mut last = head.saturating_sub(lines);
    if lines > 0 {
        for event in events.read(last, lines as usize).await? {
            last = event.seq;
            print_event(&event, output.json)?;
        }
    }
    if !follow {
        return Ok(());
    }
    let mut stream = events.subscribe(last).await?;
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(event)) => print_event(&event, output.json)?,
                Some(Err(error)) => return Err(error.into()),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Where an export goes: a temporary file renamed into place when complete, or stdout.
enum Sink {
    File {
        temp: tempfile::NamedTempFile,
        path: PathBuf,
    },
    Stdout,
}

impl Sink {
    fn open(file: Option<PathBuf>) -> Result<Self, CliError> {
        let Some(path) = file.filter(|p| p.as_os_str() != "-") else {
            return Ok(Self::Stdout);
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let temp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| CliError::failure(format!("cannot write in {}: {e}", dir.display())))?;
        Ok(Self::File { temp, path })
    }

    fn describe(&self) -> String {
        match self {
            Self::File { path, .. } => path.display().to_string(),
            Self::Stdout => "stdout".to_owned(),
        }
    }
}

async fn export(source: SourceArgs, file: Option<PathBuf>, after: u64) -> Result<(), CliError> {
    let events = source.open().await?.event_store();
    let head = events.head().await?.map_or(0, |h| h.seq);
    let sink = Sink::open(file)?;
    let target = sink.describe();
    let write_error = |e: io::Error| CliError::failure(format!("cannot write {target}: {e}"));
    let bar = progress(Some(head.saturating_sub(after)), "exporting");
    let mut count = 0u64;
    {
        let stdout = io::stdout();
        let mut out: Box<dyn Write> = match &sink {
            Sink::File { temp, .. } => Box::new(BufWriter::new(temp.as_file())),
            Sink::Stdout => Box::new(BufWriter::new(stdout.lock())),
        };
        let mut cursor = after;
        // The export is the log up to the head it started from.
        while cursor < head {
            let page = events
                .read(cursor, PAGE.min((head - cursor) as usize))
                .await?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            for event in &page {
                serde_json::to_writer(&mut out, event)
                    .map_err(io::Error::from)
                    .map_err(write_error)?;
                out.write_all(b"\n").map_err(write_error)?;
            }
            count += page.len() as u64;
            bar.inc(page.len() as u64);
        }
        out.flush().map_err(write_error)?;
    }
    bar.finish_and_clear();
    if let Sink::File { temp, path } = sink {
        temp.as_file().sync_all().map_err(write_error)?;
        temp.persist(&path).map_err(|e| {
            CliError::failure(format!("cannot write {}: {}", path.display(), e.error))
        })?;
    }
    eprintln!(
        "exported {count} events (seq {}..={}) to {target}",
        after + 1,
        after + count
    );
    Ok(())
}

/// The non-empty lines of an export, with their 1-based line numbers.
type NumberedLines<'a> = Box<dyn Iterator<Item = Result<(usize, String), CliError>> + 'a>;

/// An export to import: a file (read twice: check, then import) or stdin (buffered).
enum Input {
    File(PathBuf),
    Buffered(Vec<String>),
}

impl Input {
    fn open(path: &Path) -> Result<Self, CliError> {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::failure(format!("cannot read stdin: {e}")))?;
            return Ok(Self::Buffered(text.lines().map(str::to_owned).collect()));
        }
        File::open(path)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
        Ok(Self::File(path.to_owned()))
    }

    /// The non-empty lines with their 1-based line numbers.
    fn lines(&self) -> Result<NumberedLines<'_>, CliError> {
        let numbered =
            |(i, line): (usize, io::Result<String>)| -> Option<Result<(usize, String), CliError>> {
                match line {
                    Ok(line) if line.trim().is_empty() => None,
                    Ok(line) => Some(Ok((i + 1, line))),
                    Err(e) => Some(Err(CliError::failure(format!(
                        "cannot read line {}: {e}",
                        i + 1
                    )))),
                }
            };
        Ok(match self {
            Self::File(path) => {
                let file = File::open(path).map_err(|e| {
                    CliError::failure(format!("cannot read {}: {e}", path.display()))
                })?;
                Box::new(
                    BufReader::new(file)
                        .lines()
                        .enumerate()
                        .filter_map(numbered),
                )
            }
            Self::Buffered(lines) => Box::new(
                lines
                    .iter()
                    .map(|l| Ok(l.clone()))
                    .enumerate()
                    .filter_map(numbered),
            ),
        })
    }
}

/// Decodes one exported line, refusing numbers that would not survive the round trip.
fn decode(line_no: usize, line: &str) -> Result<Event, CliError> {
    check_exact_integers(line.as_bytes())
        .map_err(|e| CliError::failure(format!("line {line_no}: {e}; nothing was imported")))?;
    serde_json::from_str(line).map_err(|e| {
        CliError::failure(format!(
            "line {line_no}: not an exported event: {e}; nothing was imported"
        ))
    })
}

async fn import(source: SourceArgs, output: OutputArgs, path: &Path) -> Result<(), CliError> {
    let stores = source.store_only("events import").await?;
    if let Some(head) = stores.events.head().await? {
        return Err(CliError::failure(format!(
            "the store at {} is not empty (head seq {}); `events import` only fills an empty store",
            stores.location, head.seq
        )));
    }
    let input = Input::open(path)?;

    // First pass: the whole export must be one valid chain from seq 1, of events the catalogue
    // accepts, each id once; otherwise nothing is written.
    let checking = progress(None, "checking the export");
    let mut verifier = ChainVerifier::new();
    let mut ids = HashSet::new();
    for line in input.lines()? {
        let (line_no, line) = line?;
        let event = decode(line_no, &line)?;
        verifier.push(&event).map_err(|broken| {
            CliError::failure(format!(
                "line {line_no}: the export's chain is broken at seq {}: {}; nothing was imported",
                broken.seq, broken.fault
            ))
        })?;
        if let Err(error) = catalogue::validate(&event.to_new_event()) {
            return Err(CliError::failure(format!(
                "line {line_no} (seq {}): {error}; nothing was imported",
                event.seq
            )));
        }
        if !ids.insert(event.event_id.clone()) {
            return Err(CliError::failure(format!(
                "line {line_no} (seq {}): event id `{}` appears twice; nothing was imported",
                event.seq, event.event_id
            )));
        }
        checking.inc(1);
    }
    checking.finish_and_clear();
    let report = verifier.finish();

    // Second pass: append in batches; each event must land at its exported seq with its
    // exported hash.
    let ledger = Ledger::open(stores.events.clone(), stores.graphs.clone()).await?;
    let bar = progress(Some(report.events), "importing");
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut expected = Vec::with_capacity(IMPORT_BATCH);
    for line in input.lines()? {
        let (line_no, line) = line?;
        let event = decode(line_no, &line)?;
        expected.push(event.head());
        batch.push(event.to_new_event());
        if batch.len() == IMPORT_BATCH {
            append_batch(&ledger, &mut batch, &mut expected).await?;
            bar.inc(IMPORT_BATCH as u64);
        }
    }
    append_batch(&ledger, &mut batch, &mut expected).await?;
    ledger.flush().await?;
    bar.finish_and_clear();

    let head = stores.events.head().await?;
    if head != report.head {
        return Err(CliError::failure(format!(
            "after the import the store's head is {head:?}, the export's is {:?}",
            report.head
        )));
    }
    if output.json {
        return print_json(&serde_json::json!({"imported": report.events, "head": head}));
    }
    match head {
        Some(head) => println!(
            "imported {} events into {}; head seq {} hash {}; every event reproduced its exported seq and hash",
            report.events, stores.location, head.seq, head.hash
        ),
        None => println!("the export is empty; nothing was imported"),
    }
    Ok(())
}

async fn append_batch(
    ledger: &Ledger,
    batch: &mut Vec<NewEvent>,
    expected: &mut Vec<Head>,
) -> Result<(), CliError> {
    if batch.is_empty() {
        return Ok(());
    }
    let receipt = ledger.import(std::mem::take(batch)).await?;
    let expected = std::mem::take(expected);
    let landed = receipt.head.map_or(0, |h| h.seq);
    if receipt.appended.len() != expected.len() {
        return Err(CliError::failure(format!(
            "import stopped: {} of {} events were appended (another writer?); the store now ends at seq {landed}",
            receipt.appended.len(),
            expected.len()
        )));
    }
    for (event, want) in receipt.appended.iter().zip(&expected) {
        if event.head() != *want {
            return Err(CliError::failure(format!(
                "import stopped: seq {} was re-appended as seq {} with hash {}, the export says hash {}; the store now ends at seq {landed}",
                want.seq, event.seq, event.hash, want.hash
            )));
        }
    }
    Ok(())
}
