#pragma once
// flopwise-studio's window: scenario editor on the left, results on the right.
#include <QMainWindow>
#include <QProcess>
#include <atomic>
#include <memory>
#include <vector>

#include "flopwise/gui/scenario.hpp"
#include "flopwise/launch.hpp"
#include "flopwise/trace.hpp"

class QChartView;
class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QGraphicsScene;
class QLabel;
class QLineEdit;
class QListWidget;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableWidget;
class QTabWidget;
class QLineSeries;

namespace flopwise::gui {

class MainWindow : public QMainWindow {
  Q_OBJECT

 public:
  MainWindow();
  ~MainWindow() override;
  void set_scenario(const Scenario& scenario);
  Scenario scenario() const;
  // Runs the planner in this thread (headless use); throws InputError on bad input.
  void run_now();
  bool save_screenshot(const QString& path);
  // Shows the tab with this title ("Comparison", "Cost vs time", ...); false if there is none.
  bool show_tab(const QString& title);
  // Simulates the selected plan off the GUI thread and draws its timeline (also behind the
  // Timeline tab's button); wait_for_simulation runs the event loop until it is drawn.
  void simulate_selected();
  void wait_for_simulation();
  // Trains the selected plan for `steps` steps with flopwise-train (also behind the Training tab).
  void launch_training(int steps = 50);
  // Waits (running the event loop) until a launched training run ends; its exit code.
  int wait_for_training();
  // Writes plan.json, megatron-args.txt and every chart as PNG and SVG into `dir`; false when no
  // plan is selected or a file cannot be written.
  bool export_all(const QString& dir);

 signals:
  void simulation_finished();

 private:
  void draw_timeline(const Plan& plan, const SimulationResult& result, const std::vector<TraceSpan>& spans);
  QWidget* build_editor();
  QWidget* build_pools_editor();
  void add_pool_row(const std::string& option);
  QWidget* build_comparison_tab();
  QWidget* build_training_tab();
  void build_menus();
  void start_run();
  void show_outcomes(ScenarioResult result);
  void select_plan(int row);
  void refresh_charts();
  void read_training_output();
  void export_plan();
  void export_megatron();
  void export_charts(bool svg);
  bool write_megatron(const QString& path);
  void export_launcher();
  // The launcher of the selected plan at `path`, with the plan saved beside it; "" or the error.
  QString write_launcher(const QString& path, LaunchTarget target, const std::string& image = "");
  bool write_charts(const QString& dir, bool svg);
  const Plan* selected_plan() const;

  // Editor.
  QComboBox* model_ = nullptr;
  QListWidget* profiles_ = nullptr;
  QSpinBox *min_devices_ = nullptr, *max_devices_ = nullptr, *global_batch_ = nullptr, *seq_len_ = nullptr;
  QLineEdit* tokens_ = nullptr;
  QComboBox *objective_ = nullptr, *precision_ = nullptr, *fp8_recipe_ = nullptr;
  QCheckBox* bf16_moments_ = nullptr;
  QDoubleSpinBox *deadline_ = nullptr, *budget_ = nullptr;
  QTableWidget* pools_ = nullptr;  // profile and device count per pool
  QLineEdit* pool_links_ = nullptr;
  QPushButton *run_ = nullptr, *cancel_ = nullptr;
  QProgressBar* progress_ = nullptr;
  QLabel* status_ = nullptr;
  // Results.
  QTabWidget* tabs_ = nullptr;
  QTableWidget* table_ = nullptr;
  QChartView *cost_chart_ = nullptr, *days_chart_ = nullptr, *mfu_chart_ = nullptr, *devices_chart_ = nullptr;
  QChartView *scatter_ = nullptr, *memory_chart_ = nullptr, *time_chart_ = nullptr;
  QLabel* pools_note_ = nullptr;  // which pool does what in the selected mixed plan
  QGraphicsScene* timeline_ = nullptr;
  QLabel* timeline_note_ = nullptr;
  // Training.
  QProcess training_;
  QLabel* training_note_ = nullptr;
  QPushButton *launch_ = nullptr, *stop_ = nullptr;
  QLineSeries *loss_series_ = nullptr, *throughput_series_ = nullptr;
  QChartView *loss_chart_ = nullptr, *throughput_chart_ = nullptr;
  QString training_buffer_;
  QString training_plan_path_;

  std::vector<ProfileOutcome> outcomes_;
  std::atomic<bool> cancel_requested_{false};
  int selected_ = -1;
  bool simulating_ = false;
};

}  // namespace flopwise::gui
