// flopwise-studio: compare hardware scenarios, export plans, launch training.
// Headless: flopwise-studio --scenario FILE --screenshot OUT.png runs the scenario, renders the
// window, saves it and exits (QT_QPA_PLATFORM=offscreen needs no display).
#include <QApplication>
#include <QCommandLineParser>
#include <iostream>

#include "flopwise/error.hpp"
#include "main_window.hpp"

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName("flopwise-studio");
  QCommandLineParser parser;
  parser.setApplicationDescription("Compare hardware cost scenarios for MoE training, export plans, launch training.");
  parser.addHelpOption();
  const QCommandLineOption scenario_option("scenario", "Scenario file to load (and run, with --screenshot).", "file");
  const QCommandLineOption screenshot_option("screenshot", "Run, save the window as PNG and exit.", "png");
  const QCommandLineOption tab_option("tab", "Tab to show before the screenshot, e.g. \"Cost vs time\".", "title");
  parser.addOption(tab_option);
  const QCommandLineOption train_option("train", "Train the selected plan for this many steps before the screenshot.",
                                        "steps");
  parser.addOption(train_option);
  const QCommandLineOption export_option("export", "Write the selected plan, its Megatron-LM arguments and the charts "
                                                   "(PNG and SVG) into this folder.", "dir");
  parser.addOption(export_option);
  parser.addOption(scenario_option);
  parser.addOption(screenshot_option);
  parser.process(app);

  flopwise::gui::MainWindow window;
  try {
    if (parser.isSet(scenario_option)) {
      window.set_scenario(flopwise::gui::load_scenario(parser.value(scenario_option).toStdString()));
    }
    if (parser.isSet(screenshot_option)) {
      window.run_now();
      if (parser.value(tab_option) == "Timeline") {
        window.simulate_selected();
        window.wait_for_simulation();
      }
      if (parser.isSet(train_option)) {
        window.launch_training(parser.value(train_option).toInt());
        if (window.wait_for_training() != 0) {
          std::cerr << "flopwise-studio: error: training failed (see the Training tab)\n";
        }
      }
      if (parser.isSet(tab_option) && !window.show_tab(parser.value(tab_option))) {
        std::cerr << "flopwise-studio: error: --tab: no tab named '" << parser.value(tab_option).toStdString() << "'\n";
        return 2;
      }
      if (parser.isSet(export_option) && !window.export_all(parser.value(export_option))) {
        std::cerr << "flopwise-studio: error: cannot export to " << parser.value(export_option).toStdString() << "\n";
        return 2;
      }
      if (!window.save_screenshot(parser.value(screenshot_option))) {
        std::cerr << "flopwise-studio: error: cannot write " << parser.value(screenshot_option).toStdString() << "\n";
        return 2;
      }
      return 0;
    }
  } catch (const flopwise::InputError& e) {
    std::cerr << "flopwise-studio: error: " << e.what() << "\n";
    return 2;
  }
  window.show();
  return app.exec();
}
