#include "main_window.hpp"

#include <QApplication>
#include <QCheckBox>
#include <QDir>
#include <QEventLoop>
#include <QFileDialog>
#include <QFormLayout>
#include <QGraphicsRectItem>
#include <QGraphicsScene>
#include <QGraphicsView>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QInputDialog>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QMenuBar>
#include <QMessageBox>
#include <QPainter>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QSvgGenerator>
#include <QTabWidget>
#include <QTableWidget>
#include <QThread>
#include <QVBoxLayout>
#include <QtCharts>
#include <fstream>
#include <map>
#include <set>

#include "flopwise/catalog.hpp"
#include "flopwise/gui/axis_scale.hpp"
#include "flopwise/error.hpp"
#include "flopwise/mixed_simulation.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/pools.hpp"
#include "flopwise/report.hpp"
#include "flopwise/trace.hpp"

namespace flopwise::gui {
namespace {

QChartView* new_chart_view(const QString& title) {
  auto* chart = new QChart();
  chart->setTitle(title);
  chart->legend()->hide();
  auto* view = new QChartView(chart);
  view->setRenderHint(QPainter::Antialiasing);
  view->setMinimumHeight(180);
  return view;
}

// What an axis shows: its title and how its ticks read.
struct AxisMeaning {
  AxisMeaning(const char* title, AxisQuantity quantity = AxisQuantity::kDecimal, std::string currency = "")
      : title(title), quantity(quantity), currency(std::move(currency)) {}
  QString title;
  AxisQuantity quantity;
  std::string currency;
};

// Removes (and frees) the chart's axes of `orientations`.
void remove_axes(QChart* chart, Qt::Orientations orientations = Qt::Horizontal | Qt::Vertical) {
  for (QAbstractAxis* axis : chart->axes(orientations)) {
    chart->removeAxis(axis);
    delete axis;
  }
}

// Replaces the chart's axis on `alignment` by round ticks over [low, high] (axis_scale's labels:
// integers with separators, money with currency and K/M) and attaches every series to it.
void set_value_axis(QChart* chart, Qt::Alignment alignment, double low, double high, const AxisMeaning& meaning) {
  const Qt::Orientation orientation = alignment & (Qt::AlignLeft | Qt::AlignRight) ? Qt::Vertical : Qt::Horizontal;
  remove_axes(chart, orientation);
  const AxisScale scale = axis_scale(low, high, meaning.quantity, meaning.currency);
  auto* axis = new QCategoryAxis();
  axis->setLabelsPosition(QCategoryAxis::AxisLabelsPositionOnValue);
  axis->setStartValue(scale.min);
  for (const AxisTick& tick : scale.ticks) axis->append(QString::fromStdString(tick.label), tick.value);
  axis->setRange(scale.min, scale.max);
  axis->setTitleText(meaning.title);
  chart->addAxis(axis, alignment);
  for (QAbstractSeries* series : chart->series()) series->attachAxis(axis);
}

// One bar per name, from zero.
void fill_bars(QChartView* view, const QStringList& names, const QList<qreal>& values, const QString& names_title,
               const AxisMeaning& meaning) {
  QChart* chart = view->chart();
  chart->removeAllSeries();
  remove_axes(chart);
  auto* set = new QBarSet(meaning.title);
  set->append(values);
  auto* series = new QBarSeries();
  series->append(set);
  chart->addSeries(series);
  auto* x = new QBarCategoryAxis();
  x->append(names);
  x->setTitleText(names_title);
  chart->addAxis(x, Qt::AlignBottom);
  series->attachAxis(x);
  double low = 0, high = 0;
  for (const qreal v : values) low = std::min(low, v), high = std::max(high, v);
  set_value_axis(chart, Qt::AlignLeft, low, high, meaning);
}

// Training charts: steps so far across, the loss or tokens/s seen so far up.
void set_training_axes(QChart* chart, double last_step, double low, double high, bool loss) {
  set_value_axis(chart, Qt::AlignBottom, 0, std::max(1.0, last_step), {"step", AxisQuantity::kCount});
  set_value_axis(chart, Qt::AlignLeft, low, high, loss ? AxisMeaning{"loss"} : AxisMeaning{"tokens per second", AxisQuantity::kCount});
}

QColor category_colour(const std::string& category) {
  if (category == "compute") return QColor(70, 130, 180);
  if (category == "tp") return QColor(230, 159, 0);
  if (category == "cp") return QColor(240, 228, 66);
  if (category == "ep") return QColor(213, 94, 0);
  if (category == "pp") return QColor(0, 158, 115);
  if (category == "dp") return QColor(204, 121, 167);
  return QColor(200, 200, 200);  // bubble
}

// A mixed plan's layout and hardware are per pool: the row and titles name the pools' instead.
QString plan_row_layout(const Plan& plan) {
  if (!plan.mixed) return QString::fromStdString(layout_label(plan.layout));
  QStringList parts;
  for (const PlanPool& p : plan.mixed->pools) parts << QString::fromStdString(p.name + ": " + layout_label(p.layout));
  return parts.join("; ");
}

QString hardware_label(const Plan& plan) {
  if (!plan.mixed) return QString::fromStdString(plan.hardware.profile);
  QStringList parts;
  for (const PlanPool& p : plan.mixed->pools) parts << QString::fromStdString(p.hardware.profile);
  return parts.join(" + ");
}

}  // namespace

MainWindow::MainWindow() {
  setWindowTitle("flopwise-studio");
  auto* splitter = new QSplitter();
  splitter->addWidget(build_editor());
  tabs_ = new QTabWidget();
  tabs_->addTab(build_comparison_tab(), "Comparison");
  scatter_ = new_chart_view("Cost against time to train (Pareto front in red)");
  tabs_->addTab(scatter_, "Cost vs time");
  auto* plan_tab = new QWidget();
  auto* plan_layout = new QVBoxLayout(plan_tab);
  memory_chart_ = new_chart_view("Memory per device");
  time_chart_ = new_chart_view("Step time");
  pools_note_ = new QLabel();
  pools_note_->setWordWrap(true);
  pools_note_->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  pools_note_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  plan_layout->addWidget(pools_note_);
  plan_layout->addWidget(memory_chart_);
  plan_layout->addWidget(time_chart_);
  tabs_->addTab(plan_tab, "Selected plan");
  auto* timeline_tab = new QWidget();
  auto* timeline_layout = new QVBoxLayout(timeline_tab);
  auto* simulate = new QPushButton("Simulate the selected plan (SimGrid)");
  connect(simulate, &QPushButton::clicked, this, &MainWindow::simulate_selected);
  timeline_note_ = new QLabel("Select a plan, then simulate it to see one step per device.");
  timeline_note_->setWordWrap(true);
  timeline_ = new QGraphicsScene(this);
  timeline_layout->addWidget(simulate);
  timeline_layout->addWidget(timeline_note_);
  timeline_layout->addWidget(new QGraphicsView(timeline_));
  tabs_->addTab(timeline_tab, "Timeline");
  tabs_->addTab(build_training_tab(), "Training");
  splitter->addWidget(tabs_);
  splitter->setStretchFactor(1, 3);
  setCentralWidget(splitter);
  build_menus();
  resize(1500, 900);
}

MainWindow::~MainWindow() {
  if (training_.state() != QProcess::NotRunning) {
    training_.kill();
    training_.waitForFinished(2000);
  }
}

QWidget* MainWindow::build_editor() {
  auto* editor = new QWidget();
  auto* form = new QFormLayout(editor);
  model_ = new QComboBox();
  model_->setEditable(true);
  for (const std::string& name : builtin_preset_names()) model_->addItem(QString::fromStdString(name));
  auto* browse = new QPushButton("config.json…");
  connect(browse, &QPushButton::clicked, this, [this] {
    const QString path = QFileDialog::getOpenFileName(this, "Hugging Face config.json", {}, "JSON (*.json)");
    if (!path.isEmpty()) model_->setCurrentText(path);
  });
  auto* model_row = new QHBoxLayout();
  model_row->addWidget(model_, 1);
  model_row->addWidget(browse);
  form->addRow("Model", model_row);
  profiles_ = new QListWidget();
  for (const std::string& name : builtin_profile_names()) {
    auto* item = new QListWidgetItem(QString::fromStdString(name), profiles_);
    item->setFlags(item->flags() | Qt::ItemIsUserCheckable);
    item->setCheckState(Qt::Unchecked);
  }
  form->addRow("Hardware", profiles_);
  min_devices_ = new QSpinBox();
  max_devices_ = new QSpinBox();
  for (QSpinBox* box : {min_devices_, max_devices_}) box->setRange(1, 1 << 20);
  auto* devices_row = new QHBoxLayout();
  devices_row->addWidget(min_devices_);
  devices_row->addWidget(new QLabel("to"));
  devices_row->addWidget(max_devices_);
  form->addRow("Devices", devices_row);
  tokens_ = new QLineEdit();
  form->addRow("Tokens", tokens_);
  global_batch_ = new QSpinBox();
  global_batch_->setRange(1, 1 << 24);
  form->addRow("Global batch (sequences)", global_batch_);
  seq_len_ = new QSpinBox();
  seq_len_->setRange(1, 1 << 20);
  form->addRow("Sequence length", seq_len_);
  objective_ = new QComboBox();
  for (Objective o : {Objective::kMinCost, Objective::kMinTime, Objective::kMinCostDeadline, Objective::kMinTimeBudget}) {
    objective_->addItem(QString::fromStdString(to_string(o)));
  }
  form->addRow("Objective", objective_);
  deadline_ = new QDoubleSpinBox();
  deadline_->setRange(0, 1e6);
  form->addRow("Deadline (days)", deadline_);
  budget_ = new QDoubleSpinBox();
  budget_->setRange(0, 1e15);
  budget_->setDecimals(0);
  form->addRow("Budget", budget_);
  precision_ = new QComboBox();
  precision_->addItems({"bf16", "fp16", "fp8", "fp32"});
  form->addRow("Precision", precision_);
  // Megatron-LM's --fp8-recipe: what an fp8 run's casts cost; meaningless for other precisions.
  fp8_recipe_ = new QComboBox();
  for (Fp8Recipe r : {Fp8Recipe::kTensorwise, Fp8Recipe::kDelayed, Fp8Recipe::kMxfp8, Fp8Recipe::kBlockwise}) {
    fp8_recipe_->addItem(QString::fromStdString(to_string(r)));
  }
  fp8_recipe_->setEnabled(false);
  // Megatron-Core's precision-aware optimizer: a mixed-precision (bf16, fp8) run's option.
  bf16_moments_ = new QCheckBox("AdamW moments in bf16 (needs optimizer sharding)");
  connect(precision_, &QComboBox::currentTextChanged, this, [this](const QString& precision) {
    fp8_recipe_->setEnabled(precision == "fp8");
    bf16_moments_->setEnabled(precision == "bf16" || precision == "fp8");
  });
  form->addRow("FP8 recipe", fp8_recipe_);
  form->addRow("Optimizer", bf16_moments_);
  form->addRow("Pools", build_pools_editor());
  pool_links_ = new QLineEdit();
  pool_links_->setPlaceholderText("A-C:100Gb/s,2ms; ... (other pools share a cluster network)");
  form->addRow("Pool links", pool_links_);
  run_ = new QPushButton("Compare");
  cancel_ = new QPushButton("Cancel");
  cancel_->setEnabled(false);
  connect(run_, &QPushButton::clicked, this, &MainWindow::start_run);
  connect(cancel_, &QPushButton::clicked, this, [this] { cancel_requested_ = true; });
  auto* buttons = new QHBoxLayout();
  buttons->addWidget(run_);
  buttons->addWidget(cancel_);
  form->addRow(buttons);
  progress_ = new QProgressBar();
  form->addRow(progress_);
  status_ = new QLabel();
  status_->setWordWrap(true);
  form->addRow(status_);
  set_scenario(Scenario{});
  return editor;
}

// Pools of devices one run may use together: a profile and a device count per row.
QWidget* MainWindow::build_pools_editor() {
  auto* box = new QWidget();
  auto* layout = new QVBoxLayout(box);
  layout->setContentsMargins(0, 0, 0, 0);
  pools_ = new QTableWidget(0, 2);
  pools_->setHorizontalHeaderLabels({"profile", "devices"});
  pools_->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
  pools_->setMaximumHeight(120);
  auto* add = new QPushButton("Add pool");
  auto* remove = new QPushButton("Remove pool");
  connect(add, &QPushButton::clicked, this, [this] { add_pool_row("device-A:64"); });
  connect(remove, &QPushButton::clicked, this, [this] {
    if (pools_->rowCount() > 0) pools_->removeRow(pools_->currentRow() >= 0 ? pools_->currentRow() : pools_->rowCount() - 1);
  });
  auto* buttons = new QHBoxLayout();
  buttons->addWidget(add);
  buttons->addWidget(remove);
  layout->addWidget(pools_);
  layout->addLayout(buttons);
  return box;
}

// One pool row from a --pool option ("[NAME=]PROFILE:COUNT"); the row keeps the name, if any.
void MainWindow::add_pool_row(const std::string& option) {
  const PoolSpec pool = parse_pool_option(option);
  const int row = pools_->rowCount();
  pools_->insertRow(row);
  auto* profile = new QComboBox();
  profile->setEditable(true);
  for (const std::string& name : builtin_profile_names()) profile->addItem(QString::fromStdString(name));
  profile->setCurrentText(QString::fromStdString(pool.profile));
  profile->setProperty("pool_name", QString::fromStdString(pool.name == pool.profile ? "" : pool.name));
  auto* devices = new QSpinBox();
  devices->setRange(1, 1 << 20);
  devices->setValue(pool.max_devices);
  pools_->setCellWidget(row, 0, profile);
  pools_->setCellWidget(row, 1, devices);
}

QWidget* MainWindow::build_comparison_tab() {
  auto* tab = new QWidget();
  auto* layout = new QVBoxLayout(tab);
  // Days, device-hours and cost are expected at the goodput; "ideal cost" is failure-free.
  const QStringList headers = {"hardware", "devices", "layout", "step (s)", "tokens/s", "MFU", "goodput",
                               "days",     "device-hours", "ideal cost", "cost"};
  table_ = new QTableWidget(0, static_cast<int>(headers.size()));
  table_->setHorizontalHeaderLabels(headers);
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  connect(table_, &QTableWidget::currentCellChanged, this, [this](int row) { select_plan(row); });
  layout->addWidget(table_, 2);
  auto* grid = new QGridLayout();
  cost_chart_ = new_chart_view("Cost, expected with failures and checkpoints");
  days_chart_ = new_chart_view("Days to train");
  mfu_chart_ = new_chart_view("MFU");
  devices_chart_ = new_chart_view("Devices");
  grid->addWidget(cost_chart_, 0, 0);
  grid->addWidget(days_chart_, 0, 1);
  grid->addWidget(mfu_chart_, 1, 0);
  grid->addWidget(devices_chart_, 1, 1);
  layout->addLayout(grid, 3);
  return tab;
}

QWidget* MainWindow::build_training_tab() {
  auto* tab = new QWidget();
  auto* layout = new QVBoxLayout(tab);
  launch_ = new QPushButton("Train the selected plan here (scaled down)");
  stop_ = new QPushButton("Stop");
  stop_->setEnabled(false);
  auto* buttons = new QHBoxLayout();
  buttons->addWidget(launch_);
  buttons->addWidget(stop_);
  layout->addLayout(buttons);
  training_note_ = new QLabel();
  training_note_->setWordWrap(true);
  layout->addWidget(training_note_);
  loss_chart_ = new_chart_view("Training loss");
  throughput_chart_ = new_chart_view("Tokens per second");
  loss_series_ = new QLineSeries();
  throughput_series_ = new QLineSeries();
  loss_chart_->chart()->addSeries(loss_series_);
  throughput_chart_->chart()->addSeries(throughput_series_);
  set_training_axes(loss_chart_->chart(), 1, 0, 1, true);
  set_training_axes(throughput_chart_->chart(), 1, 0, 1, false);
  layout->addWidget(loss_chart_);
  layout->addWidget(throughput_chart_);
  connect(launch_, &QPushButton::clicked, this, [this] { launch_training(); });
  connect(stop_, &QPushButton::clicked, this, [this] { training_.terminate(); });
  connect(&training_, &QProcess::readyReadStandardOutput, this, &MainWindow::read_training_output);
  connect(&training_, &QProcess::finished, this, [this](int code) {
    launch_->setEnabled(true);
    stop_->setEnabled(false);
    training_note_->setText(training_note_->text() + QString("\nflopwise-train ended with code %1.").arg(code));
  });
  const QString trainer = QCoreApplication::applicationDirPath() + "/flopwise-train";
  if (!QFileInfo::exists(trainer)) {
    launch_->setEnabled(false);
    training_note_->setText("Training needs flopwise-train next to this program (" + trainer +
                            "); it is built when LibTorch is found: configure with -DFLOPWISE_BUILD_EXECUTOR=ON.");
  }
  return tab;
}

void MainWindow::build_menus() {
  QMenu* file = menuBar()->addMenu("&File");
  file->addAction("Load scenario…", this, [this] {
    const QString path = QFileDialog::getOpenFileName(this, "Scenario", {}, "Scenario (*.json)");
    if (path.isEmpty()) return;
    try {
      set_scenario(load_scenario(path.toStdString()));
    } catch (const InputError& e) {
      QMessageBox::warning(this, "Scenario", e.what());
    }
  });
  file->addAction("Save scenario…", this, [this] {
    const QString path = QFileDialog::getSaveFileName(this, "Scenario", "scenario.json", "Scenario (*.json)");
    if (!path.isEmpty()) save_scenario(scenario(), path.toStdString());
  });
  file->addSeparator();
  file->addAction("Export plan JSON…", this, &MainWindow::export_plan);
  file->addAction("Export Megatron-LM arguments…", this, &MainWindow::export_megatron);
  file->addAction("Export launcher (Slurm, torchrun, Kubernetes)…", this, &MainWindow::export_launcher);
  file->addAction("Export charts as PNG…", this, [this] { export_charts(false); });
  file->addAction("Export charts as SVG…", this, [this] { export_charts(true); });
}

void MainWindow::set_scenario(const Scenario& s) {
  model_->setCurrentText(QString::fromStdString(s.model));
  for (int i = 0; i < profiles_->count(); ++i) {
    QListWidgetItem* item = profiles_->item(i);
    const bool chosen = std::find(s.profiles.begin(), s.profiles.end(), item->text().toStdString()) != s.profiles.end();
    item->setCheckState(chosen ? Qt::Checked : Qt::Unchecked);
  }
  for (const std::string& p : s.profiles) {  // profile files that are not built in
    if (profiles_->findItems(QString::fromStdString(p), Qt::MatchExactly).isEmpty()) {
      auto* item = new QListWidgetItem(QString::fromStdString(p), profiles_);
      item->setFlags(item->flags() | Qt::ItemIsUserCheckable);
      item->setCheckState(Qt::Checked);
    }
  }
  min_devices_->setValue(s.devices.min);
  max_devices_->setValue(s.devices.max);
  tokens_->setText(QString::number(s.tokens, 'g', 6));
  global_batch_->setValue(s.global_batch);
  seq_len_->setValue(s.seq_len);
  objective_->setCurrentText(QString::fromStdString(to_string(s.objective)));
  deadline_->setValue(s.deadline_days);
  budget_->setValue(s.budget);
  precision_->setCurrentText(QString::fromStdString(to_string(s.precision)));
  fp8_recipe_->setCurrentText(QString::fromStdString(to_string(s.fp8_recipe)));
  bf16_moments_->setChecked(s.adam_moments_in_bf16);
  pools_->setRowCount(0);
  for (const std::string& pool : s.pools) add_pool_row(pool);
  QStringList links;
  for (const std::string& link : s.pool_links) links << QString::fromStdString(link);
  pool_links_->setText(links.join("; "));
}

Scenario MainWindow::scenario() const {
  Scenario s;
  s.model = model_->currentText().toStdString();
  s.profiles.clear();
  for (int i = 0; i < profiles_->count(); ++i) {
    if (profiles_->item(i)->checkState() == Qt::Checked) s.profiles.push_back(profiles_->item(i)->text().toStdString());
  }
  s.devices = {min_devices_->value(), max_devices_->value()};
  bool ok = false;
  s.tokens = tokens_->text().toDouble(&ok);
  if (!ok || s.tokens <= 0) throw input_error("scenario", "tokens", "expected a positive number such as 1e12");
  s.global_batch = global_batch_->value();
  s.seq_len = seq_len_->value();
  s.objective = parse_objective(objective_->currentText().toStdString(), "scenario", "objective");
  s.deadline_days = deadline_->value();
  s.budget = budget_->value();
  s.precision = parse_precision(precision_->currentText().toStdString(), "scenario", "precision");
  if (s.precision == Precision::kFp8) {
    s.fp8_recipe = parse_fp8_recipe(fp8_recipe_->currentText().toStdString(), "scenario", "fp8_recipe");
  }
  s.adam_moments_in_bf16 = bf16_moments_->isEnabled() && bf16_moments_->isChecked();
  for (int row = 0; row < pools_->rowCount(); ++row) {
    const auto* profile = static_cast<QComboBox*>(pools_->cellWidget(row, 0));
    const auto* devices = static_cast<QSpinBox*>(pools_->cellWidget(row, 1));
    const QString name = profile->property("pool_name").toString();
    s.pools.push_back(((name.isEmpty() ? "" : name + "=") + profile->currentText() + ":" + QString::number(devices->value()))
                          .toStdString());
  }
  for (const QString& link : pool_links_->text().split(';', Qt::SkipEmptyParts)) {
    if (!link.trimmed().isEmpty()) s.pool_links.push_back(link.trimmed().toStdString());
  }
  if (s.profiles.empty()) throw input_error("scenario", "profiles", "tick at least one hardware profile");
  return s;
}

void MainWindow::run_now() { show_outcomes(run_scenario(scenario())); }

// The planner runs off the GUI thread; results and progress come back as queued calls.
void MainWindow::start_run() {
  Scenario s;
  try {
    s = scenario();
  } catch (const InputError& e) {
    status_->setText(e.what());
    return;
  }
  cancel_requested_ = false;
  run_->setEnabled(false);
  cancel_->setEnabled(true);
  progress_->setRange(0, static_cast<int>(s.profiles.size() + (s.pools.empty() ? 0 : 1)));
  progress_->setValue(0);
  status_->setText("Planning…");
  QThread* worker = QThread::create([this, s] {
    try {
      auto outcomes = run_scenario(
          s, [this](int done, int) { QMetaObject::invokeMethod(progress_, [this, done] { progress_->setValue(done); }); },
          &cancel_requested_);
      QMetaObject::invokeMethod(this, [this, outcomes]() mutable { show_outcomes(std::move(outcomes)); });
    } catch (const std::exception& e) {
      const QString message = e.what();
      QMetaObject::invokeMethod(this, [this, message] { status_->setText(message); });
    }
    QMetaObject::invokeMethod(this, [this] {
      run_->setEnabled(true);
      cancel_->setEnabled(false);
    });
  });
  connect(worker, &QThread::finished, worker, &QObject::deleteLater);
  worker->start();
}

void MainWindow::show_outcomes(ScenarioResult result) {
  outcomes_ = std::move(result.outcomes);
  table_->setRowCount(static_cast<int>(outcomes_.size()));
  for (int row = 0; row < static_cast<int>(outcomes_.size()); ++row) {
    const ProfileOutcome& o = outcomes_[row];
    auto set = [&](int column, const QString& text) { table_->setItem(row, column, new QTableWidgetItem(text)); };
    set(0, QString::fromStdString(o.profile));
    for (int column = 1; column < table_->columnCount(); ++column) set(column, "");
    if (!o.plan) {
      set(2, QString::fromStdString(o.error));
      continue;
    }
    const StepCost& c = o.plan->predicted;
    const auto count = [](double value) { return QString::fromStdString(with_thousands(std::llround(value))); };
    set(1, count(o.plan->devices()));
    set(2, plan_row_layout(*o.plan));
    set(3, QString::number(c.step_time_s, 'f', 2));
    set(4, count(c.tokens_per_s));
    set(5, QString::number(100 * c.mfu, 'f', 1) + "%");
    set(6, QString::number(100 * c.goodput.fraction, 'f', 1) + "%");
    set(7, QString::number(c.days, 'f', 1));
    set(8, count(c.device_hours));
    set(9, QString::fromStdString(format_money(c.goodput.ideal_cost, c.currency)));
    set(10, QString::fromStdString(format_money(c.cost, c.currency)));
  }
  status_->setText(cancel_requested_ ? "Cancelled: partial results." : "Done.");
  progress_->setRange(0, std::max<int>(1, static_cast<int>(outcomes_.size())));
  progress_->setValue(static_cast<int>(outcomes_.size()));
  refresh_charts();
  // The winner as compare_profiles picked it, the same as the CLI's compare.
  const int best = result.best;
  if (best >= 0) table_->selectRow(best);
  select_plan(best);
}

void MainWindow::refresh_charts() {
  QStringList names;
  QList<qreal> cost, days, mfu, devices;
  std::vector<std::pair<double, double>> points;
  for (const ProfileOutcome& o : outcomes_) {
    if (!o.plan) continue;
    names << QString::fromStdString(o.profile);
    cost << o.plan->predicted.cost;
    days << o.plan->predicted.days;
    mfu << 100 * o.plan->predicted.mfu;
    devices << o.plan->devices();
    points.push_back({o.plan->predicted.days, o.plan->predicted.cost});
  }
  std::string currency;
  for (const ProfileOutcome& o : outcomes_) {
    if (o.plan) currency = o.plan->predicted.currency;  // run_scenario refuses mixed currencies
  }
  const AxisMeaning money{"cost", AxisQuantity::kMoney, currency};
  fill_bars(cost_chart_, names, cost, "hardware profile", money);
  fill_bars(days_chart_, names, days, "hardware profile", {"days to train"});
  fill_bars(mfu_chart_, names, mfu, "hardware profile", {"MFU (%)"});
  fill_bars(devices_chart_, names, devices, "hardware profile", {"devices", AxisQuantity::kCount});
  QChart* chart = scatter_->chart();
  chart->removeAllSeries();
  remove_axes(chart);
  // One series per profile, so the legend names the points.
  for (size_t i = 0; i < points.size(); ++i) {
    auto* point = new QScatterSeries();
    point->setName(names[static_cast<int>(i)]);
    point->append(points[i].first, points[i].second);
    chart->addSeries(point);
  }
  auto* front = new QLineSeries();
  front->setName("Pareto front");
  front->setColor(Qt::red);
  for (size_t i : pareto_front(points)) front->append(points[i].first, points[i].second);
  chart->addSeries(front);
  chart->legend()->show();
  // Axes from zero with a margin, so that no point sits on the frame.
  double max_days = 0, max_cost = 0;
  for (const auto& [d, c] : points) max_days = std::max(max_days, d), max_cost = std::max(max_cost, c);
  set_value_axis(chart, Qt::AlignBottom, 0, max_days * 1.15, {"days to train"});
  set_value_axis(chart, Qt::AlignLeft, 0, max_cost * 1.15, money);
}

const Plan* MainWindow::selected_plan() const {
  if (selected_ < 0 || selected_ >= static_cast<int>(outcomes_.size()) || !outcomes_[selected_].plan) return nullptr;
  return &*outcomes_[selected_].plan;
}

void MainWindow::select_plan(int row) {
  selected_ = row;
  const Plan* plan = selected_plan();
  if (!plan) return;
  const StepCost& c = plan->predicted;
  pools_note_->setText(QString::fromStdString(pools_detail(*plan)));
  pools_note_->setVisible(plan->mixed.has_value());
  const MemoryBreakdown& m = c.memory_bytes;
  auto stacked = new QHorizontalStackedBarSeries();
  const std::pair<const char*, double> parts[] = {{"weights", m.weights},         {"grads", m.grads},
                                                  {"optimizer", m.optimizer},     {"activations", m.activations},
                                                  {"buffers", m.buffers}};
  for (const auto& [name, bytes] : parts) {
    auto* set = new QBarSet(name);
    *set << bytes / kGiB;
    stacked->append(set);
  }
  QChart* memory = memory_chart_->chart();
  memory->removeAllSeries();
  remove_axes(memory);
  memory->addSeries(stacked);
  auto* rank_axis = new QBarCategoryAxis();
  rank_axis->append(QString("rank %1").arg(c.busiest_memory_rank));
  rank_axis->setTitleText("pipeline rank");
  memory->addAxis(rank_axis, Qt::AlignLeft);
  stacked->attachAxis(rank_axis);
  // The axis runs at least to the device's memory (a mixed plan's largest), so the bar reads
  // against the capacity.
  Bytes device_memory = plan->hardware.memory_bytes;
  for (const PlanPool& p : plan->mixed ? plan->mixed->pools : std::vector<PlanPool>{}) {
    device_memory = std::max(device_memory, p.hardware.memory_bytes);
  }
  set_value_axis(memory, Qt::AlignBottom, 0, std::max(device_memory, m.total()) / kGiB, {"GiB per device"});
  memory->legend()->show();
  memory->setTitle(QString("Memory per device%5, pipeline rank %1: %2 GiB of %3 GiB usable (%4 GiB on the device)")
                       .arg(c.busiest_memory_rank)
                       .arg(m.total() / kGiB, 0, 'f', 1)
                       .arg(c.usable_memory_bytes / kGiB, 0, 'f', 1)
                       .arg(device_memory / kGiB, 0, 'f', 1)
                       .arg(plan->mixed ? " on the critical pool" : ""));
  // The step cost's field list: every additive part, so the bars add up to the step time.
  QStringList names;
  QList<qreal> values;
  for (const StepTimePart& part : step_time_parts()) {
    names << part.label;
    values << part.of(c);
  }
  fill_bars(time_chart_, names, values, "part of the step", {"seconds"});
  time_chart_->chart()->setTitle(QString("Step time %1 s on %2 x %3, %4")
                                     .arg(c.step_time_s, 0, 'f', 2)
                                     .arg(plan->devices())
                                     .arg(hardware_label(*plan))
                                     .arg(plan_row_layout(*plan)));
}

// The simulated step of the selected plan, one lane per device (first 32 simulated devices). The
// simulation runs in a worker thread; the timeline is drawn back on the GUI thread.
void MainWindow::simulate_selected() {
  const Plan* plan = selected_plan();
  if (!plan) {
    timeline_note_->setText("Select a plan first.");
    return;
  }
  if (simulating_) return;
  simulating_ = true;
  timeline_note_->setText("Simulating…");
  const Plan copy = *plan;
  const std::string trace = QDir::temp().filePath("flopwise-studio-trace.json").toStdString();
  QThread* worker = QThread::create([this, copy, trace] {
    try {
      SimulationResult r;
      if (copy.mixed) {
        r = simulate_mixed_plan(copy, "selected plan", trace).result;
      } else {
        const CostModel cost(copy.model, copy.run, resolve_profile(copy.hardware.profile));
        r = simulate_step(cost, copy.layout, {trace});
      }
      std::vector<TraceSpan> spans = read_trace(trace);
      QMetaObject::invokeMethod(this, [this, copy, r, spans] { draw_timeline(copy, r, spans); });
    } catch (const std::exception& e) {
      const QString message = e.what();
      QMetaObject::invokeMethod(this, [this, message] { timeline_note_->setText(message); });
    }
    QMetaObject::invokeMethod(this, [this] {
      simulating_ = false;
      emit simulation_finished();
    });
  });
  connect(worker, &QThread::finished, worker, &QObject::deleteLater);
  worker->start();
}

void MainWindow::wait_for_simulation() {
  if (!simulating_) return;
  QEventLoop loop;
  connect(this, &MainWindow::simulation_finished, &loop, &QEventLoop::quit);
  loop.exec();
}

void MainWindow::draw_timeline(const Plan& plan, const SimulationResult& r, const std::vector<TraceSpan>& spans) {
  timeline_->clear();
  std::set<int> ranks;
  for (const TraceSpan& s : spans) ranks.insert(s.rank);
  std::map<int, int> lane;  // the first 32 devices, in rank order
  for (int rank : ranks) {
    if (lane.size() < 32) lane.emplace(rank, static_cast<int>(lane.size()));
  }
  const double width = 1400.0 / r.step_time_s;
  for (const TraceSpan& s : spans) {
    if (!lane.count(s.rank)) continue;
    auto* rect = timeline_->addRect(s.start * width, lane[s.rank] * 14.0, std::max(0.5, s.duration * width), 12.0,
                                    QPen(Qt::NoPen), QBrush(category_colour(s.category)));
    rect->setToolTip(QString::fromStdString(s.category + ": " + s.name));
  }
  for (const auto& [rank, row] : lane) timeline_->addSimpleText(QString("dev %1").arg(rank))->setPos(-60, row * 14.0 - 2);
  timeline_note_->setText(QString("Simulated step %1 s (analytic %2 s). Blue compute, orange TP, red EP, green PP, "
                                  "pink DP, grey bubble. %3")
                              .arg(r.step_time_s, 0, 'f', 2)
                              .arg(plan.predicted.step_time_s, 0, 'f', 2)
                              .arg(QString::fromStdString(r.approximation)));
}

int MainWindow::wait_for_training() {
  if (training_.state() != QProcess::NotRunning) {
    QEventLoop loop;
    connect(&training_, &QProcess::finished, &loop, &QEventLoop::quit);
    loop.exec();
  }
  return training_.exitCode();
}

void MainWindow::launch_training(int steps) {
  const Plan* plan = selected_plan();
  if (!plan) {
    training_note_->setText("Select a plan first.");
    return;
  }
  training_plan_path_ = QDir::temp().filePath("flopwise-studio-plan.json");
  save_plan(*plan, training_plan_path_.toStdString());
  loss_series_->clear();
  throughput_series_->clear();
  training_buffer_.clear();
  training_.setProcessChannelMode(QProcess::MergedChannels);
  training_.start(QCoreApplication::applicationDirPath() + "/flopwise-train",
                  {training_plan_path_, "--steps", QString::number(steps), "--progress-json"});
  launch_->setEnabled(false);
  stop_->setEnabled(true);
  training_note_->setText("Training " + QString::fromStdString(plan->model.name) + " scaled down to this machine…");
}

// flopwise-train --progress-json prints one flopwise.progress/1 object per step; every other line
// (notes, the summary, errors) is text for the status line.
void MainWindow::read_training_output() {
  training_buffer_ += QString::fromLocal8Bit(training_.readAllStandardOutput());
  qsizetype newline;
  while ((newline = training_buffer_.indexOf('\n')) >= 0) {
    const std::string line = training_buffer_.left(newline).toStdString();
    training_buffer_.remove(0, newline + 1);
    const nlohmann::json progress = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!progress.is_object() || progress.value("schema", "") != "flopwise.progress/1") {
      if (!QString::fromStdString(line).trimmed().isEmpty()) training_note_->setText(QString::fromStdString(line));
      continue;
    }
    const double step = progress.value("step", 0.0);
    loss_series_->append(step, progress.value("loss", 0.0));
    throughput_series_->append(step, progress.value("tokens_per_s", 0.0));
    for (QChartView* view : {loss_chart_, throughput_chart_}) {
      QChart* chart = view->chart();
      auto* series = static_cast<QLineSeries*>(chart->series().first());
      const auto points = series->points();
      double low = 1e300, high = -1e300;
      for (const QPointF& p : points) low = std::min(low, p.y()), high = std::max(high, p.y());
      set_training_axes(chart, step, low, high, view == loss_chart_);
    }
  }
}

void MainWindow::export_plan() {
  const Plan* plan = selected_plan();
  if (!plan) return;
  const QString path = QFileDialog::getSaveFileName(this, "Plan", "plan.json", "Plan (*.json)");
  if (!path.isEmpty()) save_plan(*plan, path.toStdString());
}

void MainWindow::export_megatron() {
  if (!selected_plan()) return;
  const QString path = QFileDialog::getSaveFileName(this, "Megatron-LM arguments", "megatron-args.txt");
  if (!path.isEmpty()) write_megatron(path);
}

bool MainWindow::write_megatron(const QString& path) {
  const Plan* plan = selected_plan();
  if (!plan) return false;
  std::ofstream out(path.toStdString());
  const std::vector<MegatronJob> jobs = megatron_jobs(*plan);
  if (jobs.empty()) out << "# no Megatron-LM form: " << to_string(plan->mixed->strategy) << " needs a heterogeneous trainer\n";
  for (const MegatronJob& job : jobs) {
    if (!job.pool.empty()) out << "# pool " << job.pool << "\n";
    for (const std::string& arg : job.args) out << arg << "\n";
  }
  return static_cast<bool>(out);
}

// The launcher names its plan, so the plan is saved beside it (NAME-plan.json); flopwise-train is
// the one beside this program, as `flopwise launch` takes the one beside flopwise.
void MainWindow::export_launcher() {
  if (!selected_plan()) return;
  QString filter;
  const QString path = QFileDialog::getSaveFileName(
      this, "Launcher", "launch.sbatch", "Slurm sbatch script (*.sbatch);;torchrun lines, one per node (*.sh);;Kubeflow PyTorchJob (*.yaml)",
      &filter);
  if (path.isEmpty()) return;
  const LaunchTarget target = filter.startsWith("Slurm")      ? LaunchTarget::kSlurm
                              : filter.startsWith("torchrun") ? LaunchTarget::kTorchrun
                                                              : LaunchTarget::kKubernetes;
  QString image;
  if (target == LaunchTarget::kKubernetes) {
    image = QInputDialog::getText(this, "Container image", "Image with flopwise-train on its PATH:");
    if (image.isEmpty()) return;
  }
  const QString error = write_launcher(path, target, image.toStdString());
  if (!error.isEmpty()) QMessageBox::warning(this, "Launcher", error);
}

QString MainWindow::write_launcher(const QString& path, LaunchTarget target, const std::string& image) {
  const Plan* plan = selected_plan();
  if (!plan) return "no plan selected";
  const QFileInfo info(path);
  const std::string plan_path = (info.absolutePath() + "/" + info.completeBaseName() + "-plan.json").toStdString();
  try {
    LaunchOptions o;
    o.target = target, o.image = image, o.plan_path = plan_path;
    o.program = default_program(target, QCoreApplication::applicationDirPath().toStdString());
    save_plan(*plan, plan_path);
    flopwise::write_launcher(path.toStdString(), launcher_text(*plan, o), target);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void MainWindow::export_charts(bool svg) {
  const QString dir = QFileDialog::getExistingDirectory(this, "Export charts to");
  if (!dir.isEmpty()) write_charts(dir, svg);
}

bool MainWindow::write_charts(const QString& dir, bool svg) {
  const std::pair<QChartView*, const char*> charts[] = {{cost_chart_, "cost"},     {days_chart_, "days"},
                                                        {mfu_chart_, "mfu"},       {devices_chart_, "devices"},
                                                        {scatter_, "cost-vs-time"}, {memory_chart_, "memory"},
                                                        {time_chart_, "step-time"}};
  bool ok = true;
  for (const auto& [view, name] : charts) {
    const QString path = dir + "/" + name + (svg ? ".svg" : ".png");
    if (!svg) {
      // Charts on hidden tabs have no size yet: render them at a fixed one.
      QPixmap image(900, 600);
      image.fill(Qt::white);
      QPainter painter(&image);
      view->chart()->setGeometry(0, 0, 900, 600);
      view->chart()->scene()->render(&painter, QRectF(0, 0, 900, 600), view->chart()->geometry());
      ok &= image.save(path);
      continue;
    }
    QSvgGenerator generator;
    generator.setFileName(path);
    generator.setSize(QSize(900, 600));
    generator.setViewBox(QRect(0, 0, 900, 600));
    QPainter painter(&generator);
    view->chart()->setGeometry(0, 0, 900, 600);
    view->chart()->scene()->render(&painter, QRectF(0, 0, 900, 600), view->chart()->geometry());
  }
  return ok;
}

bool MainWindow::export_all(const QString& dir) {
  const Plan* plan = selected_plan();
  if (!plan) return false;
  QDir().mkpath(dir);
  save_plan(*plan, (dir + "/plan.json").toStdString());
  // `flopwise launch` takes single-pool plans only: a mixed plan exports no launchers.
  const bool launchers = plan->mixed || (write_launcher(dir + "/launch.sbatch", LaunchTarget::kSlurm).isEmpty() &&
                                         write_launcher(dir + "/launch-torchrun.sh", LaunchTarget::kTorchrun).isEmpty());
  return write_megatron(dir + "/megatron-args.txt") && launchers && write_charts(dir, false) && write_charts(dir, true);
}

bool MainWindow::show_tab(const QString& title) {
  for (int i = 0; i < tabs_->count(); ++i) {
    if (tabs_->tabText(i) == title) {
      tabs_->setCurrentIndex(i);
      return true;
    }
  }
  return false;
}

bool MainWindow::save_screenshot(const QString& path) {
  show();
  QCoreApplication::processEvents();
  return grab().save(path);
}

}  // namespace flopwise::gui
